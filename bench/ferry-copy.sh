#!/usr/bin/env bash
# ferry-copy.sh: ferry's copy job measured the way bench/copy-2g.sh
# measures its peers: a controller, a source agent and a target agent as
# three processes on loopback with mutual TLS; a backup job of the file
# (set-up, shown but not compared), then a copy job with password
# encryption, timed. The target writes and fsyncs. Prints one line for the
# copy (MB/s of source data, wall time) and one per agent (CPU seconds and
# peak RSS during the copy, from /proc: peak RSS is reset before the copy).
#
# Usage: bench/ferry-copy.sh FILE WORKDIR   (FILE: the data to back up and copy)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
file=$1
work=$2
mkdir -p "$work/ferry"
cd "$work/ferry"
pids=()
cleanup() {
	for p in ${pids[@]+"${pids[@]}"}; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT
port() { echo $((20000 + RANDOM % 20000)); }
cp_=$(port); sp=$(port); tp=$(port)
C="$BIN/controller"
"$C" pki init --dir pki >/dev/null
for n in controller:controller source:source target:target admin:client; do
	"$C" pki issue --dir pki --name "${n%%:*}" --role "${n##*:}" >/dev/null
done
tlsb() { printf 'tls {\n cert_file = "pki/%s.crt"\n key_file = "pki/%s.key"\n ca_file = "pki/ca.crt"\n}\n' "$1" "$1"; }
{ echo "listen = \"127.0.0.1:$cp_\""; echo 'state_dir = "state/controller"'; tlsb controller; } > controller.hcl
{ echo 'name = "source"'; echo 'role = "source"'; echo "listen = \"127.0.0.1:$sp\""; echo 'state_dir = "state/source"'; tlsb source
  printf 'repository "local" {\n path = "repos/source"\n}\n'; } > source.hcl
{ echo 'name = "target"'; echo 'role = "target"'; echo "listen = \"127.0.0.1:$tp\""; echo 'state_dir = "state/target"'; tlsb target
  printf 'repository "local" {\n path = "repos/target"\n require_encryption = true\n}\n'; } > target.hcl
"$C" serve -config controller.hcl 2>controller.log & pids+=($!)
"$BIN/agent-source" -config source.hcl 2>source.log & pids+=($!); spid=$!
"$BIN/agent-target" -config target.hcl 2>target.log & pids+=($!); tpid=$!
export FERRY_ADDR=127.0.0.1:$cp_ FERRY_CACERT=$PWD/pki/ca.crt FERRY_CLIENT_CERT=$PWD/pki/admin.crt FERRY_CLIENT_KEY=$PWD/pki/admin.key
for _ in $(seq 100); do "$C" agent list >/dev/null 2>&1 && break; sleep 0.1; done
"$C" agent add source --address "127.0.0.1:$sp" --role source >/dev/null
"$C" agent add target --address "127.0.0.1:$tp" --role target >/dev/null
mkdir -p data && ln -f "$file" data/ 2>/dev/null || cp "$file" data/
printf 'bench source pw %s\n' "$RANDOM" > src.pw
printf 'bench copy pw %s\n' "$RANDOM" > copy.pw
"$C" job create data --kind backup --agent source --repo local --path "$PWD/data" --password-file src.pw >/dev/null
"$C" job create offsite --kind copy --from source:local/data --to target:local --password-file copy.pw >/dev/null
n=$(stat -c %s "$file")
t0=$(date +%s.%N)
"$C" job run data --wait >/dev/null
t1=$(date +%s.%N)
awk -v n="$n" -v s="$t0" -v e="$t1" 'BEGIN { printf "  (set-up) ferry backup job %8.1f MB/s  wall %6.2fs\n", n / 1e6 / (e - s), e - s }'
sync
cpu() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"; }
echo 5 > "/proc/$spid/clear_refs"; echo 5 > "/proc/$tpid/clear_refs"
sc0=$(cpu "$spid"); tc0=$(cpu "$tpid")
t0=$(date +%s.%N)
"$C" job run offsite --wait >/dev/null
t1=$(date +%s.%N)
sc1=$(cpu "$spid"); tc1=$(cpu "$tpid")
srss=$(awk '/VmHWM/ { print $2 }' "/proc/$spid/status"); trss=$(awk '/VmHWM/ { print $2 }' "/proc/$tpid/status")
awk -v n="$n" -v s="$t0" -v e="$t1" -v sc0="$sc0" -v sc1="$sc1" -v tc0="$tc0" -v tc1="$tc1" -v sr="$srss" -v tr="$trss" 'BEGIN {
	sc = sc1 - sc0; tc = tc1 - tc0
	printf "%-36s %8.1f MB/s  wall %6.2fs  cpu %6.2fs  peak RSS %7.1f MiB\n", "ferry copy job (mtls, aes-gcm)", n / 1e6 / (e - s), e - s, sc + tc, (sr > tr ? sr : tr) / 1024
	printf "  %-34s %8s %18s  cpu %6.2fs  peak RSS %7.1f MiB\n", "agent-source", "", "", sc, sr / 1024
	printf "  %-34s %8s %18s  cpu %6.2fs  peak RSS %7.1f MiB\n", "agent-target", "", "", tc, tr / 1024
}'
"$C" verify --job offsite --keyless >/dev/null
