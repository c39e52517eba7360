#!/usr/bin/env bash
# copy-2g.sh: the copy job's comparison benchmark. The deterministic 2 GiB
# mixed file goes from a source to a target on this machine, by:
#   - the bare pipeline (cmd/ferry-barepipe): read -> AES-256-GCM -> gRPC
#     over mutual TLS 1.3 on loopback -> write + fsync, with an end-to-end
#     SHA-256 check, as two processes. Nothing else is in the way, so it is
#     the ceiling for ferry's copy on this machine.
#   - restic copy: restic 0.18 copies a snapshot of the file from repository
#     A into repository B, which has another password and A's chunker
#     parameters. The backup into A is set-up; its time is shown, not
#     compared.
# Each contender prints MB/s of the file, wall time, and CPU seconds and
# peak RSS of each of its processes (GNU time), then a last line compares
# them with the first.
#
# A contender is one `measure` line. Processes it needs beside the timed one
# (a receiver, an agent) are started just before with `start_helper`;
# `measure` reports them too, after the timed command, once they have
# exited: by themselves within 5 s, or on the SIGTERM it then sends them
# (daemons), and their exit status is not checked then.
#
# Usage: bench/copy-2g.sh   (after make build and bench/install-peers.sh)
#   SIZE=512MiB bench/copy-2g.sh   another file size (default 2GiB)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
RESTIC=${RESTIC:-$PWD/.tools/bin/restic}
SIZE=${SIZE:-2GiB}
T=/usr/bin/time

for tool in "$BIN/ferry-datagen" "$BIN/ferry-barepipe" "$BIN/controller" "$BIN/agent-source" "$BIN/agent-target" "$RESTIC" "$T"; do
	[ -x "$tool" ] || { echo "copy-2g: $tool missing: run make build and bench/install-peers.sh" >&2; exit 1; }
done

work=$(mktemp -d /var/tmp/ferry-copy-bench.XXXXXX)
helper_names=() helper_pids=() main_pid=
cleanup() {
	local pid pids=($main_pid ${helper_pids[@]+"${helper_pids[@]}"})
	# Each process runs under GNU time: stop the process itself (time's
	# child), let time reap it, then stop a time that is still there.
	for pid in ${pids[@]+"${pids[@]}"}; do
		pkill -TERM -P "$pid" 2>/dev/null || true
	done
	if [ ${#pids[@]} -gt 0 ]; then
		sleep 0.5
		kill -TERM "${pids[@]}" 2>/dev/null || true
	fi
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bytes_of() { stat -c %s "$1"; }

# start_helper NAME CMD...: starts CMD in the background under GNU time,
# for the next measure; $helper is its index, for helper_line.
start_helper() {
	local name=$1; shift
	helper=${#helper_pids[@]}
	"$T" -f '%U %S %M' -o "$work/helper.$helper.time" "$@" >"$work/helper.$helper.out" 2>"$work/helper.$helper.err" &
	helper_names+=("$name")
	helper_pids+=("$!")
}

# helper_line I PREFIX: waits up to 30 s for a line of helper I's stdout
# that starts with PREFIX, and prints the rest of it.
helper_line() {
	local i=$1 prefix=$2 line _
	for _ in $(seq 300); do
		if line=$(grep -m1 "^$prefix" "$work/helper.$i.out" 2>/dev/null); then
			echo "${line#"$prefix"}"
			return 0
		fi
		if ! kill -0 "${helper_pids[$i]}" 2>/dev/null; then
			echo "copy-2g: ${helper_names[$i]} exited early:" >&2
			cat "$work/helper.$i.err" >&2
			return 1
		fi
		sleep 0.1
	done
	echo "copy-2g: no \"$prefix\" line from ${helper_names[$i]} after 30s" >&2
	return 1
}

res_names=() res_mbs=()

# proc_name CMD...: the program CMD runs, past env and its assignments,
# with its subcommand if one follows.
proc_name() {
	while [ "$1" = env ] || [[ $1 == *=* ]]; do shift; done
	case ${2-} in [a-z]*) echo "${1##*/} $2" ;; *) echo "${1##*/}" ;; esac
}

# timed RECORD NAME BYTES CMD...: runs CMD under GNU time, waits for the
# helpers started for it, and prints one line for the run (MB/s of BYTES,
# wall time, CPU and peak RSS of all its processes) and, when there are
# helpers, one line per process. RECORD=1 enters it in the comparison.
timed() {
	local record=$1 name=$2 n=$3; shift 3
	local tf="$work/main.time" start end i
	start=$(date +%s.%N)
	# In the background so that a signal to the script is handled at once,
	# not when the command ends.
	"$T" -f '%U %S %M' -o "$tf" "$@" >"$work/main.out" &
	main_pid=$!
	if ! wait "$main_pid"; then
		echo "copy-2g: $name failed: $*" >&2
		cat "$work/main.out" >&2
		return 1
	fi
	end=$(date +%s.%N)
	main_pid=
	local names=("$(proc_name "$@")") times=("$tf")
	local pid stopped _
	for i in ${helper_pids[@]+"${!helper_pids[@]}"}; do
		pid=${helper_pids[$i]} stopped=
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			pkill -TERM -P "$pid" 2>/dev/null || true
			stopped=1
		fi
		if ! wait "$pid" && [ -z "$stopped" ]; then
			echo "copy-2g: ${helper_names[$i]} of $name failed:" >&2
			cat "$work/helper.$i.err" >&2
			return 1
		fi
		names+=("${helper_names[$i]}")
		times+=("$work/helper.$i.time")
	done
	helper_names=() helper_pids=()
	local mbs
	mbs=$(awk -v n="$n" -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", n / 1e6 / (e - s) }')
	# GNU time puts "Command terminated by signal N" before the numbers of
	# a helper that was stopped.
	for i in "${!names[@]}"; do echo "${names[$i]} $(tail -n1 "${times[$i]}")"; done |
		awk -v name="$name" -v mbs="$mbs" -v s="$start" -v e="$end" '
		{ r[NR] = $NF; c[NR] = $(NF - 2) + $(NF - 1); NF -= 3; p[NR] = $0; cpu += c[NR]; if (r[NR] > rss) rss = r[NR] }
		END {
			printf "%-36s %8s MB/s  wall %6.2fs  cpu %6.2fs  peak RSS %7.1f MiB\n", name, mbs, e - s, cpu, rss / 1024
			if (NR > 1) for (i = 1; i <= NR; i++)
				printf "  %-34s %8s %18s  cpu %6.2fs  peak RSS %7.1f MiB\n", p[i], "", "", c[i], r[i] / 1024
		}'
	if [ "$record" = 1 ]; then
		res_names+=("$name")
		res_mbs+=("$mbs")
	fi
}

measure() { timed 1 "$@"; }
setup() { timed 0 "$@"; }

load() { cut -d' ' -f1-3 /proc/loadavg; }

echo "generating $SIZE mixed data in $work"
"$BIN/ferry-datagen" mixed -seed 42 -size "$SIZE" -out "$work/mixed.img"
n=$(bytes_of "$work/mixed.img")
# Written back, so that no contender competes with the flush of the input,
# and cached, so that every contender reads it from memory alike.
sync "$work/mixed.img"
cat "$work/mixed.img" >/dev/null

echo "--- copy of a $SIZE mixed file on loopback, $(nproc) cores, load average $(load) at start; $("$RESTIC" version | cut -d' ' -f1-2)"

# The bare pipeline: the receiver creates the PKI, then prints its address.
start_helper "ferry-barepipe recv" "$BIN/ferry-barepipe" recv -listen 127.0.0.1:0 -out "$work/bare.out" -pki "$work/pki"
addr=$(helper_line "$helper" "listening ")
measure "bare pipeline (grpc, mtls, aes-gcm)" "$n" "$BIN/ferry-barepipe" send -addr "$addr" -in "$work/mixed.img" -pki "$work/pki"
chunks=$(((n + (1 << 20) - 1) >> 20))
[ "$(bytes_of "$work/bare.out")" -eq $((n + 16 * chunks)) ] || { echo "copy-2g: bare pipeline output has the wrong size" >&2; exit 1; }
rm -f "$work/bare.out"

# restic: A holds a snapshot of the file; B gets A's chunker parameters so
# that copied data deduplicates there as it would in A.
printf 'bench pw A %s\n' "$RANDOM" >"$work/pw.a"
printf 'bench pw B %s\n' "$RANDOM" >"$work/pw.b"
resticA=("$RESTIC" --no-cache -q -r "$work/repo.a" --password-file "$work/pw.a")
resticB=(env RESTIC_FROM_PASSWORD_FILE="$work/pw.a"
	"$RESTIC" --no-cache -q -r "$work/repo.b" --password-file "$work/pw.b")
"${resticA[@]}" init >/dev/null
setup "  (set-up) restic backup into A" "$n" "${resticA[@]}" backup "$work/mixed.img"
"${resticB[@]}" init --from-repo "$work/repo.a" --copy-chunker-params >/dev/null
measure "restic copy A -> B" "$n" "${resticB[@]}" copy --from-repo "$work/repo.a"
"${resticB[@]}" ls latest | grep -qxF "$work/mixed.img" || { echo "copy-2g: the copy in B lacks the file" >&2; exit 1; }
awk -v n="$n" -v a="$(du -sb "$work/repo.a" | cut -f1)" -v b="$(du -sb "$work/repo.b" | cut -f1)" \
	'BEGIN { printf "  restic stores %.0f MB in A and %.0f MB in B for %.0f MB of data (compressed)\n", a / 1e6, b / 1e6, n / 1e6 }'

# ferry: a controller and both agents as three processes, mTLS, password
# encryption at the source, the target writing and fsyncing.
ferry_out=$(bench/ferry-copy.sh "$work/mixed.img" "$work")
echo "$ferry_out" | grep -v '^session '
res_names+=("ferry copy job")
res_mbs+=("$(echo "$ferry_out" | awk '/^ferry copy job/ { for (i = 1; i <= NF; i++) if ($i == "MB/s") print $(i - 1) }')")

echo "--- load average $(load) at end"
ref=${res_mbs[0]}
summary=""
for i in "${!res_names[@]}"; do
	summary+=$(awk -v name="${res_names[$i]}" -v mbs="${res_mbs[$i]}" -v ref="$ref" -v i="$i" \
		'BEGIN { printf "%s%s %.1f MB/s (%.2fx)", (i > 0 ? "; " : ""), name, mbs, mbs / ref }')
done
echo "copy $SIZE: $summary"
