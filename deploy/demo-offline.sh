#!/usr/bin/env bash
# demo-offline.sh: the offline round trip, end to end, with the real binary:
# back up a sample tree with password encryption, change it, back up an
# incremental, verify (keyless and full), restore both points and compare.
# Runs in a temporary directory that it removes afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
C="$BIN/controller"
G="$BIN/ferry-datagen"
work=$(mktemp -d /tmp/ferry-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
step() { printf '\n== %s\n' "$*"; }

printf 'demo password %s\n' "$RANDOM$RANDOM" > "$work/password"
chmod 600 "$work/password"

step "make a sample tree (deterministic: files, dirs, symlinks, modes, mtimes)"
"$G" tree -seed 1 -out "$work/site"
du -sh "$work/site" | cut -f1

step "day 1: full backup, encrypted with a password"
"$C" offline backup --repo "$work/repo" --backup site --path "$work/site" \
	--password-file "$work/password" --password-hint "in the demo dir"
cp -a "$work/site" "$work/site-day1"

step "day 2: change the tree, back up an incremental"
"$G" mutate -seed 2 -dir "$work/site"
"$C" offline backup --repo "$work/repo" --backup site --path "$work/site" --password-file "$work/password"

step "list the restore points"
"$C" offline ls --repo "$work/repo"

step "verify without any key, then in full"
"$C" offline verify --repo "$work/repo" --backup site --keyless
"$C" offline verify --repo "$work/repo" --backup site --password-file "$work/password"

step "restore both points and compare with the originals"
first=$("$C" offline ls --repo "$work/repo" --backup site -o json | sed -n 's/.*"id": "\([0-9a-f]\{32\}\)".*/\1/p' | sed -n 2p)
"$C" offline restore --repo "$work/repo" --backup site --point "$first" --to "$work/restored-day1" --password-file "$work/password"
"$C" offline restore --repo "$work/repo" --backup site --to "$work/restored-day2" --password-file "$work/password"
diff -r --no-dereference "$work/site-day1" "$work/restored-day1"
diff -r --no-dereference "$work/site" "$work/restored-day2"
echo "both points restore byte-identical"

step "a wrong password is refused, and the hint shown"
printf 'not it\n' > "$work/wrong"
if "$C" offline restore --repo "$work/repo" --backup site --to "$work/nope" --password-file "$work/wrong"; then
	echo "a wrong password was accepted" >&2
	exit 1
fi
echo
echo "demo ok"
