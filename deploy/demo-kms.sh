#!/usr/bin/env bash
# demo-kms.sh: the copy demo with KMS encryption. Session secrets are wrapped
# by a Vault Transit key: the in-repo Transit test server (bin/transit-dev),
# or a real Vault when VAULT_ADDR and VAULT_TOKEN are set. Three processes as
# in demo.sh; a backup job and a copy job with KMS keys, a full and an
# incremental copy, then a key rotation and a rewrap (key tables rewritten,
# data untouched), and restores afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
C="$BIN/controller"
work=$(mktemp -d /tmp/ferry-demo-kms.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ "${KEEP:-}" = "" ]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }

if [ -z "${VAULT_ADDR:-}" ] || [ -z "${VAULT_TOKEN:-}" ]; then
	step "start the Vault Transit test server (set VAULT_ADDR and VAULT_TOKEN to use a real Vault)"
	TRANSIT_LISTEN=127.0.0.1:18200 "$BIN/transit-dev" >"$work/transit.log" 2>&1 & pids+=($!)
	export VAULT_ADDR=http://127.0.0.1:18200 VAULT_TOKEN=root
	for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/18200) 2>/dev/null && break; sleep 0.1; done
fi
echo "Vault at $VAULT_ADDR"

cp deploy/demo/*.hcl "$work/"
cd "$work"
step "PKI and the three processes (the controller takes Vault from VAULT_ADDR/VAULT_TOKEN)"
"$C" pki init --dir pki >/dev/null
for n in controller:controller source:source target:target admin:client; do
	"$C" pki issue --dir pki --name "${n%%:*}" --role "${n##*:}" >/dev/null
done
"$C" serve -config controller.hcl 2>controller.log & pids+=($!)
"$BIN/agent-source" -config agent-source.hcl 2>agent-source.log & pids+=($!)
"$BIN/agent-target" -config agent-target.hcl 2>agent-target.log & pids+=($!)
export FERRY_ADDR=127.0.0.1:17700 FERRY_CACERT=$work/pki/ca.crt FERRY_CLIENT_CERT=$work/pki/admin.crt FERRY_CLIENT_KEY=$work/pki/admin.key
for _ in $(seq 100); do "$C" agent list >/dev/null 2>&1 && break; sleep 0.1; done
"$C" agent add source --address 127.0.0.1:17701 --role source
"$C" agent add target --address 127.0.0.1:17702 --role target

step "jobs whose session secrets Vault wraps: an AES key for the backup, an RSA key for the copy"
"$BIN/ferry-datagen" tree -seed 3 -out "$work/site"
"$C" job create site --kind backup --agent source --repo local --path "$work/site" --encryption kms --kms-key ferry-demo-site
"$C" job create offsite --kind copy --from source:local/site --to target:local --encryption kms --kms-key ferry-demo-offsite --kms-key-type rsa-4096

step "back up and copy, twice"
"$C" job run site --wait
"$C" job run offsite --wait
"$BIN/ferry-datagen" mutate -seed 4 -dir "$work/site" >/dev/null
"$C" job run site --wait
"$C" job run offsite --wait
"$C" point list --job offsite

step "rotate the copy job's Transit key and rewrap every copy (only key tables change)"
sum_before=$(find repos/target-local -name '*.ferry' -exec md5sum {} + | sort)
"$C" key rotate --job offsite
"$C" key rewrap --job offsite
"$C" point list --job offsite
sum_after=$(find repos/target-local -name '*.ferry' -exec md5sum {} + | sort)
[ "$sum_before" != "$sum_after" ] || { echo "rewrap changed nothing" >&2; exit 1; }

step "verify and restore after the rewrap"
"$C" verify --job offsite
"$C" restore --job offsite --to "target:$work/restored"
diff -r --no-dereference "$work/site" "$work/restored"
echo
echo "demo-kms ok: KMS-wrapped backups and copies, rotated and rewrapped, restore byte-identical"
