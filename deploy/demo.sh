#!/usr/bin/env bash
# demo.sh: ferry's main job end to end on loopback, as three separate
# processes (controller, source agent, target agent) started from the
# example configs in deploy/demo/. It backs up a sample directory with
# password encryption, copies it twice to the target site (a full, then an
# incremental after a change), verifies the copies without and with keys,
# restores them at the target site, compares, and stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
C="$BIN/controller"
work=$(mktemp -d /tmp/ferry-demo.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ "${KEEP:-}" = "" ]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }

cp deploy/demo/*.hcl "$work/"
cd "$work"

step "PKI: a CA and one certificate per component"
"$C" pki init --dir pki >/dev/null
for n in controller:controller source:source target:target admin:client; do
	"$C" pki issue --dir pki --name "${n%%:*}" --role "${n##*:}" >/dev/null
done
ls pki

step "start the controller and both agents as separate processes"
"$C" serve -config controller.hcl 2>controller.log & pids+=($!)
"$BIN/agent-source" -config agent-source.hcl 2>agent-source.log & pids+=($!)
"$BIN/agent-target" -config agent-target.hcl 2>agent-target.log & pids+=($!)
export FERRY_ADDR=127.0.0.1:17700 FERRY_CACERT=$work/pki/ca.crt FERRY_CLIENT_CERT=$work/pki/admin.crt FERRY_CLIENT_KEY=$work/pki/admin.key
for i in $(seq 1 100); do "$C" agent list >/dev/null 2>&1 && break; sleep 0.1; done
"$C" agent add source --address 127.0.0.1:17701 --role source
"$C" agent add target --address 127.0.0.1:17702 --role target
"$C" agent list

step "a sample directory, and the jobs"
"$BIN/ferry-datagen" tree -seed 1 -out "$work/site"
sentinel="ferry-demo-sentinel-$RANDOM$RANDOM-plaintext"
for i in $(seq 1 2000); do echo "$sentinel $i"; done > "$work/site/sentinel.txt"
printf 'demo backup password %s\n' "$RANDOM$RANDOM" > backup.pw
printf 'demo copy password %s\n' "$RANDOM$RANDOM" > copy.pw
chmod 600 backup.pw copy.pw
"$C" job create site --kind backup --agent source --repo local --path "$work/site" --password-file backup.pw --password-hint "demo backup"
"$C" job create offsite --kind copy --from source:local/site --to target:local --password-file copy.pw --password-hint "demo copy"
"$C" job list

step "day 1: back up, then copy to the target site (a full)"
"$C" job run site --wait
"$C" job run offsite --wait
cp -a "$work/site" "$work/site-day1"

step "day 2: change the sample, back up, copy again (an incremental)"
"$BIN/ferry-datagen" mutate -seed 2 -dir "$work/site" | sed 's/^/  changed: /' | head -5
"$C" job run site --wait
"$C" job run offsite --wait
"$C" point list --job offsite

step "verify the copies at the target: keyless, then in full"
"$C" verify --job offsite --keyless
"$C" verify --job offsite

step "restore both copies at the target site and compare"
first=$("$C" point list --job offsite | awk 'NR == 2 { print $4 }')
"$C" restore --job offsite --point "$first" --to "target:$work/restored-day1"
"$C" restore --job offsite --to "target:$work/restored-day2"
diff -r --no-dereference "$work/site-day1" "$work/restored-day1"
diff -r --no-dereference "$work/site" "$work/restored-day2"
echo "both copies restore byte-identical"
"$C" session list --job offsite

step "the target site never saw plaintext or keys"
if grep -rqa "$sentinel" repos/target-local state/target; then
	echo "plaintext found at the target" >&2
	exit 1
fi
echo "no plaintext from the sample in the target repository"

step "health check of the latest copy at the target (keyless), and the status"
"$C" job run offsite --health-check --wait
"$C" status
echo
echo "demo ok: 2 backups, 2 encrypted copies (full + incremental), verified and restored at the target site"
