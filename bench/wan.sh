#!/usr/bin/env bash
# wan.sh: the WAN-accelerator benchmark. A controller, a source agent and a
# target agent (with a wan_cache) run as three processes on loopback with
# mutual TLS; the target agent is registered at the address of a
# ferry-linksim in front of it (RATE each way, LATENCY each way: 100 Mbit/s
# and a 50 ms round trip by default), so every copy crosses the simulated
# link (the controller's calls to the target do too; they are small).
# Password encryption throughout; the copy jobs run with --wan.
#
# Cases:
#   day 1          backup of the deterministic mixed file, WAN copy of all
#                  of it: new data, partly compressible. MB/s of plaintext
#                  over the session's time, against the link rate.
#   incompressible a RAND_SIZE file of AES-CTR bytes (random, fixed seed),
#                  backup and WAN copy: new incompressible data; the goal is
#                  >= 90% of the link rate in plaintext MB/s.
#   day 2          ferry-datagen day2 (5% of the 1 MiB regions rewritten, 1%
#                  appended), backup, WAN copy: the bytes on the link.
#   rsync day 1/2  the peer for the same change: rsync --no-whole-file -z
#                  --compress-choice=zstd of the day-1 file, then of the
#                  day-2 file, to an rsync daemon behind a second linksim
#                  with the same shape. Goal: ferry's day-2 wire bytes (both
#                  directions) <= rsync's.
#   re-copy        a second WAN copy job of the same backup into another
#                  repository of the target: a full of data the target's
#                  WAN cache already holds. Goal: wire bytes < 1% of the data.
# Wire bytes come from the linksims' counters (bytes delivered toward the
# target, and back), read before and after each case; ferry's own WAN
# counters (controller session show -o json) are printed beside them. The
# table at the end has one line per case; then each daemon's CPU seconds and
# peak RSS over the whole run (GNU time).
#
# Usage: bench/wan.sh   (after make build and bench/install-peers.sh)
#   SIZE=256MiB      size of the mixed file (default 2GiB)
#   RAND_SIZE=64MiB  size of the incompressible file (default 256MiB)
#   RATE=400Mbit     the link's bandwidth each way (default 100Mbit)
#   LATENCY=10ms     the link's one-way latency (default 25ms)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
SIZE=${SIZE:-2GiB}
RAND_SIZE=${RAND_SIZE:-256MiB}
RATE=${RATE:-100Mbit}
LATENCY=${LATENCY:-25ms}
T=/usr/bin/time
C="$BIN/controller"

for tool in "$BIN/ferry-datagen" "$BIN/ferry-linksim" "$C" "$BIN/agent-source" "$BIN/agent-target" "$T"; do
	[ -x "$tool" ] || { echo "wan: $tool missing: run make build and bench/install-peers.sh" >&2; exit 1; }
done
for tool in rsync openssl jq; do
	command -v "$tool" >/dev/null || { echo "wan: $tool missing: run bench/install-peers.sh" >&2; exit 1; }
done
# Not `| grep -q`: under pipefail, grep's early exit would fail the pipe.
[[ $("$C" job create --help 2>/dev/null) == *--wan* ]] || { echo "wan: $C has no WAN mode (job create --wan)" >&2; exit 1; }

# to_bytes SIZE: 2GiB, 256MiB, 100KiB, 12345 -> bytes.
to_bytes() {
	awk -v s="$1" 'BEGIN {
		if (!match(s, /^[0-9]+/)) exit 1
		n = substr(s, 1, RLENGTH); u = substr(s, RLENGTH + 1)
		m["B"] = 1; m[""] = 1; m["KiB"] = 2^10; m["MiB"] = 2^20; m["GiB"] = 2^30; m["TiB"] = 2^40
		if (!(u in m)) exit 1
		printf "%.0f\n", n * m[u] }'
}
# rate_bytes RATE: a linksim rate (100Mbit, 50mbps, 12.5MB/s, 10MiB/s) in bytes/s.
rate_bytes() {
	awk -v s="$1" 'BEGIN {
		if (!match(s, /^[0-9.]+/)) exit 1
		n = substr(s, 1, RLENGTH); u = substr(s, RLENGTH + 1); sub(/\/s$/, "", u)
		b[""] = 1; b["k"] = 1e3; b["m"] = 1e6; b["g"] = 1e9; b["t"] = 1e12
		y["B"] = 1; y["KB"] = 1e3; y["MB"] = 1e6; y["GB"] = 1e9; y["KiB"] = 2^10; y["MiB"] = 2^20; y["GiB"] = 2^30
		if (u ~ /(bit|bps)$/) { p = tolower(u); sub(/(bit|bps)$/, "", p); if (!(p in b)) exit 1; v = n * b[p] / 8 }
		else if (u in y) v = n * y[u]
		else exit 1
		printf "%.0f\n", v }'
}
size_n=$(to_bytes "$SIZE") || { echo "wan: SIZE=$SIZE: want e.g. 2GiB or 256MiB" >&2; exit 2; }
rand_n=$(to_bytes "$RAND_SIZE") || { echo "wan: RAND_SIZE=$RAND_SIZE: want e.g. 256MiB" >&2; exit 2; }
link_bps=$(rate_bytes "$RATE") || { echo "wan: RATE=$RATE: want e.g. 100Mbit or 12.5MB/s" >&2; exit 2; }
[ "$link_bps" -gt 0 ] || { echo "wan: RATE must be more than 0" >&2; exit 2; }
link_mbs=$(awk -v b="$link_bps" 'BEGIN { printf "%.2f", b / 1e6 }')

work=$(mktemp -d /var/tmp/ferry-wan-bench.XXXXXX)
d_names=() d_pids=() main_pid=
# stop_daemon I: stops daemon I (the process under GNU time, then a time
# that is still there) and reaps it.
stop_daemon() {
	local pid=${d_pids[$1]}
	[ -n "$pid" ] || return 0
	pkill -TERM -P "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	d_pids[$1]=
}
cleanup() {
	local i
	if [ -n "$main_pid" ]; then
		pkill -TERM -P "$main_pid" 2>/dev/null || true
		kill -TERM "$main_pid" 2>/dev/null || true
	fi
	# Agents first, then the controller, then the links and rsync.
	for i in $(seq $((${#d_pids[@]} - 1)) -1 0); do stop_daemon "$i"; done
	wait 2>/dev/null || true
	if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_daemon NAME CMD...: starts CMD in the background under GNU time;
# $daemon is its index.
start_daemon() {
	local name=$1; shift
	daemon=${#d_pids[@]}
	"$T" -f '%U %S %M' -o "$work/daemon.$daemon.time" "$@" >"$work/daemon.$daemon.out" 2>"$work/daemon.$daemon.err" &
	d_names+=("$name")
	d_pids+=("$!")
}

# daemon_line I PREFIX: waits up to 30 s for a line of daemon I's stdout
# that starts with PREFIX, and prints the rest of it.
daemon_line() {
	local i=$1 prefix=$2 line _
	for _ in $(seq 300); do
		if line=$(grep -m1 "^$prefix" "$work/daemon.$i.out" 2>/dev/null); then
			echo "${line#"$prefix"}"
			return 0
		fi
		if ! kill -0 "${d_pids[$i]}" 2>/dev/null; then
			echo "wan: ${d_names[$i]} exited early:" >&2
			cat "$work/daemon.$i.err" >&2
			return 1
		fi
		sleep 0.1
	done
	echo "wan: no \"$prefix\" line from ${d_names[$i]} after 30s" >&2
	return 1
}

# free_ports N: N distinct random loopback ports nothing listens on.
free_ports() {
	local p ports=" "
	while [ "$(wc -w <<<"$ports")" -lt "$1" ]; do
		p=$((20000 + RANDOM % 20000))
		[[ $ports == *" $p "* ]] && continue
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || ports+="$p "
	done
	echo $ports
}

# run OUT CMD...: runs CMD with stdout to OUT, in the background so that a
# signal to the script is handled at once; fails with OUT and the daemons'
# last log lines when CMD fails.
run() {
	local out=$1 i; shift
	"$@" >"$out" 2>>"$work/cli.err" &
	main_pid=$!
	if ! wait "$main_pid"; then
		main_pid=
		echo "wan: failed: $*" >&2
		cat "$out" >&2
		tail -n 5 "$work/cli.err" >&2
		for i in "${!d_names[@]}"; do
			echo "--- ${d_names[$i]}:" >&2
			tail -n 5 "$work/daemon.$i.err" >&2
		done
		return 1
	fi
	main_pid=
}

# link_reading I: the counters of linksim I now, "TO_TARGET BACK" (bytes
# delivered each way since it started). It prints them every 250 ms; the
# wait makes the last line later than anything that just happened.
link_reading() {
	sleep 0.6
	tail -n 1 "$work/daemon.$1.out" | tr ' ' '\n' |
		awk -F= '$1 == "up_delivered" { u = $2 } $1 == "down_delivered" { d = $2 } END { if (u == "") exit 1; print u, d }'
}

now() { date +%s.%N; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

# The summary table, one entry per case.
r_case=() r_data=() r_up=() r_down=() r_time=() r_goal=() r_met=()
# record CASE DATA UP DOWN SECONDS GOAL MET
record() {
	r_case+=("$1") r_data+=("$2") r_up+=("$3") r_down+=("$4") r_time+=("$5") r_goal+=("$6") r_met+=("$7")
}

echo "generating $SIZE mixed data and $RAND_SIZE of incompressible data in $work"
mkdir -p "$work/data" "$work/rand" "$work/rsync-target"
"$BIN/ferry-datagen" mixed -seed 42 -size "$SIZE" -out "$work/data/mixed.img"
# AES-256-CTR of zeros under a fixed key: random-looking, the same every run.
# head closes the pipe, so openssl ends on SIGPIPE: its status is ignored.
{ openssl enc -aes-256-ctr -pass pass:ferry-wan-bench -nosalt -pbkdf2 </dev/zero 2>/dev/null || true; } |
	head -c "$rand_n" >"$work/rand/random.img"
[ "$(stat -c %s "$work/rand/random.img")" -eq "$rand_n" ] || { echo "wan: openssl made a short random file" >&2; exit 1; }
sync "$work/data/mixed.img" "$work/rand/random.img"

# PKI, configs, daemons.
cd "$work"
"$C" pki init --dir pki >/dev/null
for n in controller:controller source:source target:target admin:client; do
	"$C" pki issue --dir pki --name "${n%%:*}" --role "${n##*:}" >/dev/null
done
read -r cport sport tport rport <<<"$(free_ports 4)"
tlsb() { printf 'tls {\n  cert_file = "pki/%s.crt"\n  key_file  = "pki/%s.key"\n  ca_file   = "pki/ca.crt"\n}\n' "$1" "$1"; }
{ echo "listen = \"127.0.0.1:$cport\""; echo 'state_dir = "state/controller"'; tlsb controller; } >controller.hcl
{ echo 'name = "source"'; echo 'role = "source"'; echo "listen = \"127.0.0.1:$sport\""; echo 'state_dir = "state/source"'; tlsb source
	printf 'repository "local" {\n  path = "repos/source"\n}\n'; } >agent-source.hcl
{ echo 'name = "target"'; echo 'role = "target"'; echo "listen = \"127.0.0.1:$tport\""; echo 'state_dir = "state/target"'; tlsb target
	printf 'repository "local" {\n  path = "repos/target"\n  require_encryption = true\n}\n'
	printf 'repository "again" {\n  path = "repos/target-again"\n  require_encryption = true\n}\n'
	printf 'wan_cache {\n  path = "cache/target-wan"\n  size = "10GiB"\n}\n'; } >agent-target.hcl
cat >rsyncd.conf <<EOF
use chroot = no
uid = $(id -un)
gid = $(id -gn)
pid file = $work/rsyncd.pid
log file = $work/rsyncd.log
[target]
	path = $work/rsync-target
	read only = no
EOF

start_daemon controller "$C" serve -config controller.hcl; i_ctl=$daemon
start_daemon agent-source "$BIN/agent-source" -config agent-source.hcl; i_src=$daemon
start_daemon agent-target "$BIN/agent-target" -config agent-target.hcl; i_tgt=$daemon
start_daemon "ferry-linksim (ferry)" "$BIN/ferry-linksim" -listen 127.0.0.1:0 -target "127.0.0.1:$tport" \
	-rate "$RATE" -latency "$LATENCY" -stats 250ms; i_flink=$daemon
flink=$(daemon_line "$i_flink" "listening ")
start_daemon "rsync --daemon" rsync --daemon --no-detach --port "$rport" --address 127.0.0.1 --config "$work/rsyncd.conf"; i_rsyncd=$daemon
start_daemon "ferry-linksim (rsync)" "$BIN/ferry-linksim" -listen 127.0.0.1:0 -target "127.0.0.1:$rport" \
	-rate "$RATE" -latency "$LATENCY" -stats 250ms; i_rlink=$daemon
rlink=$(daemon_line "$i_rlink" "listening ")

export FERRY_ADDR=127.0.0.1:$cport FERRY_CACERT=$work/pki/ca.crt FERRY_CLIENT_CERT=$work/pki/admin.crt FERRY_CLIENT_KEY=$work/pki/admin.key
for _ in $(seq 100); do "$C" agent list >/dev/null 2>&1 && break; sleep 0.1; done
run /dev/null "$C" agent add source --address "127.0.0.1:$sport" --role source
run /dev/null "$C" agent add target --address "$flink" --role target
printf 'bench source pw %s\n' "$RANDOM$RANDOM" >src.pw
printf 'bench copy pw %s\n' "$RANDOM$RANDOM" >copy.pw
run /dev/null "$C" job create data --kind backup --agent source --repo local --path "$work/data" --password-file src.pw
run /dev/null "$C" job create rand --kind backup --agent source --repo local --path "$work/rand" --password-file src.pw
run /dev/null "$C" job create data-wan --kind copy --from source:local/data --to target:local --wan --password-file copy.pw
run /dev/null "$C" job create rand-wan --kind copy --from source:local/rand --to target:local --wan --password-file copy.pw
run /dev/null "$C" job create data-again --kind copy --from source:local/data --to target:again --wan --password-file copy.pw
# All four copy jobs in WAN mode, or the numbers mean nothing.
for j in data-wan rand-wan data-again; do
	"$C" job show "$j" -o json | jq -e '.wan == true' >/dev/null || { echo "wan: job $j is not in WAN mode" >&2; exit 1; }
done

echo "--- WAN copy on loopback through ferry-linksim: $RATE ($link_mbs MB/s) and $LATENCY each way; $(nproc) cores, load average $(load) at start"
echo "    ferry: controller 127.0.0.1:$cport, source 127.0.0.1:$sport, target 127.0.0.1:$tport behind $flink; rsync daemon 127.0.0.1:$rport behind $rlink"

# backup JOB: the backup session, set-up (shown, not compared).
backup() {
	local t0 t1
	t0=$(now)
	run "$work/out.txt" "$C" job run "$1" --wait
	t1=$(now)
	awk -v j="$1" -v s="$t0" -v e="$t1" 'BEGIN { printf "  (set-up) backup job %-14s wall %7.2fs\n", j, e - s }'
}

# ferry_copy CASE JOB DATA: runs a session of copy job JOB, measures the
# linksim counters around it, prints ferry's WAN counters and sets
# c_up, c_down (wire bytes each way) and c_secs (the session's duration).
ferry_copy() {
	local name=$1 job=$2 data=$3 before after t0 t1 sid
	before=$(link_reading "$i_flink")
	t0=$(now)
	run "$work/out.txt" "$C" job run "$job" --wait
	t1=$(now)
	after=$(link_reading "$i_flink")
	sid=$(awk 'NR == 1 && $1 == "session" { print $2 }' "$work/out.txt")
	[ -n "$sid" ] || { echo "wan: no session id in: $(cat "$work/out.txt")" >&2; return 1; }
	"$C" session show "$sid" -o json >"$work/session.$job.$sid.json"
	read -r c_up c_down < <(echo "$before $after" | awk '{ printf "%.0f %.0f\n", $3 - $1, $4 - $2 }')
	c_secs=$(jq -r '.duration_seconds' "$work/session.$job.$sid.json")
	jq -r --arg name "$name" --argjson data "$data" --arg wall "$(awk -v s="$t0" -v e="$t1" 'BEGIN { printf "%.2f", e - s }')" \
		--argjson up "$c_up" --argjson down "$c_down" '
		def mb: if . >= 1e6 then "\(. / 1e5 | round / 10) MB" elif . >= 1e3 then "\(. / 1e2 | round / 10) kB" else "\(.) B" end;
		"\($name): session \(.id) \(.mode // "-") \(.result), \(.duration_seconds * 100 | round / 100)s (wall \($wall)s), \($data | mb) of data, \(.bytes_read | mb) read",
		"  link: \($up | mb) toward the target, \($down | mb) back (\($up + $down | mb))",
		if .wan == null then "  ferry: no WAN counters in session show (not a WAN session?)"
		else .wan | "  ferry: \(.blocks) blocks (\(.plain_bytes | mb)), cache hits \(.cache_hit_blocks) (\(.cache_hit_bytes | mb)), sent \(.blocks_sent) (\(.block_plain_bytes_sent | mb) as \(.block_bytes_sent | mb), \(.compression_ratio * 100 | round / 100)x), refetched \(.blocks_refetched)",
		     "  ferry wire: \(.wire_bytes_sent | mb) sent (digests \(.digest_bytes_sent | mb), blocks \(.block_bytes_sent | mb)), \(.wire_bytes_received | mb) received, effective \(.effective_mb_per_second * 10 | round / 10) MB/s"
		end' "$work/session.$job.$sid.json"
}

# rsync_copy CASE DATA: rsync of the mixed file to the daemon through its
# linksim; sets c_up, c_down and c_secs, and prints rsync's --stats.
rsync_copy() {
	local name=$1 data=$2 before after t0 t1
	before=$(link_reading "$i_rlink")
	t0=$(now)
	run "$work/rsync.out" "$T" -f '%U %S %M' -o "$work/rsync.time" \
		rsync --no-whole-file -z --compress-choice=zstd --stats "$work/data/mixed.img" "rsync://$rlink/target/"
	t1=$(now)
	after=$(link_reading "$i_rlink")
	read -r c_up c_down < <(echo "$before $after" | awk '{ printf "%.0f %.0f\n", $3 - $1, $4 - $2 }')
	c_secs=$(awk -v s="$t0" -v e="$t1" 'BEGIN { printf "%.2f", e - s }')
	cmp -s "$work/data/mixed.img" "$work/rsync-target/mixed.img" || { echo "wan: rsync's copy differs from the file" >&2; return 1; }
	awk -v name="$name" -v n="$data" -v t="$c_secs" -v up="$c_up" -v down="$c_down" 'BEGIN {
		printf "%s: %.2fs, %.1f MB of data\n  link: %.2f MB toward the target, %.2f MB back (%.2f MB)\n", name, t, n / 1e6, up / 1e6, down / 1e6, (up + down) / 1e6 }'
	awk '{ printf "  rsync client: cpu %.2fs, peak RSS %.1f MiB\n", $(NF - 2) + $(NF - 1), $NF / 1024 }' <(tail -n 1 "$work/rsync.time")
	grep -E '^(Literal data|Matched data|Total bytes sent|Total bytes received|Total file size)' "$work/rsync.out" | sed 's/^/  rsync --stats: /'
}

mbs_of() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.1f", (t > 0 ? n / 1e6 / t : 0) }'; }
yes_no() { if awk "BEGIN { exit !($1) }"; then echo met; else echo "not met"; fi; }

echo "== day 1: new data, the whole $SIZE mixed file"
backup data
ferry_copy "ferry day 1 (WAN, full)" data-wan "$size_n"
mbs=$(mbs_of "$size_n" "$c_secs")
echo "  => $mbs MB/s of plaintext over the link, $(awk -v m="$mbs" -v l="$link_mbs" 'BEGIN { printf "%.0f%%", 100 * m / l }') of the link rate ($link_mbs MB/s)"
record "ferry day 1 (new, mixed)" "$size_n" "$c_up" "$c_down" "$c_secs" "report vs link" "-"

echo "== new incompressible data: $RAND_SIZE of AES-CTR bytes"
backup rand
ferry_copy "ferry incompressible (WAN, full)" rand-wan "$rand_n"
mbs=$(mbs_of "$rand_n" "$c_secs")
echo "  => $mbs MB/s of plaintext over the link, $(awk -v m="$mbs" -v l="$link_mbs" 'BEGIN { printf "%.0f%%", 100 * m / l }') of the link rate ($link_mbs MB/s)"
record "ferry new incompressible" "$rand_n" "$c_up" "$c_down" "$c_secs" ">= 90% of link" "$(yes_no "$mbs >= 0.9 * $link_mbs")"

echo "== rsync day 1: the $SIZE mixed file to an empty target"
rsync_copy "rsync day 1" "$size_n"
record "rsync day 1 (peer)" "$size_n" "$c_up" "$c_down" "$c_secs" "peer" "-"

echo "== day 2: ferry-datagen day2 (5% of 1 MiB regions rewritten, 1% appended)"
"$BIN/ferry-datagen" day2 -seed 43 "$work/data/mixed.img"
size2_n=$(stat -c %s "$work/data/mixed.img")
sync "$work/data/mixed.img"
backup data
ferry_copy "ferry day 2 (WAN, incremental)" data-wan "$size2_n"
f2_up=$c_up f2_down=$c_down f2_secs=$c_secs
rsync_copy "rsync day 2" "$size2_n"
r2_up=$c_up r2_down=$c_down
awk -v fu="$f2_up" -v fd="$f2_down" -v ru="$r2_up" -v rd="$r2_down" 'BEGIN {
	printf "  => day 2 on the wire: ferry %.2f MB (%.2f up), rsync %.2f MB (%.2f up): ferry/rsync %.3f\n", (fu + fd) / 1e6, fu / 1e6, (ru + rd) / 1e6, ru / 1e6, (fu + fd) / (ru + rd) }'
record "ferry day 2 (changed)" "$size2_n" "$f2_up" "$f2_down" "$f2_secs" "wire <= rsync" "$(yes_no "$f2_up + $f2_down <= $r2_up + $r2_down")"
record "rsync day 2 (peer)" "$size2_n" "$r2_up" "$r2_down" "$c_secs" "peer" "-"

echo "== re-copy: a second WAN copy job of the same backup, into another repository (data in the cache)"
ferry_copy "ferry re-copy (WAN, full, cached)" data-again "$size2_n"
echo "  => $(awk -v u="$c_up" -v d="$c_down" -v n="$size2_n" 'BEGIN { printf "%.3f%%", 100 * (u + d) / n }') of the data on the wire"
record "ferry re-copy (in cache)" "$size2_n" "$c_up" "$c_down" "$c_secs" "wire < 1% of data" "$(yes_no "$c_up + $c_down < 0.01 * $size2_n")"

echo "== check: the re-copy restores at the target to the day-2 file"
run /dev/null "$C" restore --job data-again --to "target:$work/restored"
cmp "$work/data/mixed.img" "$work/restored/mixed.img" && echo "  restored byte-identical"

echo "--- load average $(load) at end"
echo
echo "summary: $SIZE mixed, $RAND_SIZE incompressible; link $RATE ($link_mbs MB/s) and $LATENCY each way"
printf '%-26s %12s %14s %12s %9s %8s  %-18s %s\n' case "data bytes" "wire->target" "wire<-back" "time s" "MB/s" goal result
for i in "${!r_case[@]}"; do
	printf '%-26s %12d %14d %12d %9.2f %8s  %-18s %s\n' "${r_case[$i]}" "${r_data[$i]}" "${r_up[$i]}" "${r_down[$i]}" "${r_time[$i]}" \
		"$(mbs_of "${r_data[$i]}" "${r_time[$i]}")" "${r_goal[$i]}" "${r_met[$i]}"
done
echo "(MB/s: data bytes over the time; ferry's time is the session's duration, rsync's the client's wall time)"

echo
echo "daemons over the whole run (GNU time):"
cd /
for i in $(seq $((${#d_pids[@]} - 1)) -1 0); do stop_daemon "$i"; done
for i in "${!d_names[@]}"; do
	tail -n 1 "$work/daemon.$i.time" | awk -v name="${d_names[$i]}" '{ printf "  %-26s cpu %8.2fs  peak RSS %7.1f MiB\n", name, $(NF - 2) + $(NF - 1), $NF / 1024 }'
done
