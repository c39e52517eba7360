#!/usr/bin/env bash
# backup-2g.sh: backup and restore of the deterministic 2 GiB mixed file
# (half random, half text-like) with the real controller binary, side by
# side with `zstd -1 -T2 | openssl enc -aes-256-ctr` on the same file.
# Prints MB/s, CPU seconds and peak RSS of each. With BIG=8GiB (the
# default) it also backs up and restores an 8 GiB file to show that peak
# RSS does not grow with the size of the backup; BIG=0 skips that.
#
# Usage: bench/backup-2g.sh   (after make build and bench/install-peers.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
SIZE=${SIZE:-2GiB}
BIG=${BIG:-8GiB}
work=${BENCH_DIR:-$(mktemp -d /var/tmp/ferry-bench.XXXXXX)}
trap 'rm -rf "$work"' EXIT
T=/usr/bin/time

bytes_of() { stat -c %s "$1"; }

# measure NAME BYTES CMD...: runs CMD under GNU time and prints one line.
measure() {
	local name=$1 n=$2; shift 2
	local tf="$work/time.$$"
	local start end
	start=$(date +%s.%N)
	"$T" -f '%U %S %M' -o "$tf" "$@" >/dev/null
	end=$(date +%s.%N)
	read -r user sys rss < "$tf"
	awk -v name="$name" -v n="$n" -v s="$start" -v e="$end" -v u="$user" -v y="$sys" -v r="$rss" 'BEGIN {
		w = e - s; printf "%-34s %8.1f MB/s  wall %6.2fs  cpu %6.2fs  peak RSS %7.1f MiB\n", name, n / 1e6 / w, w, u + y, r / 1024 }'
}

printf 'bench pw %s\n' "$RANDOM" > "$work/pw"
echo "generating $SIZE mixed data in $work"
"$BIN/ferry-datagen" mixed -seed 42 -size "$SIZE" -out "$work/mixed.img"
n=$(bytes_of "$work/mixed.img")
cat "$work/mixed.img" > /dev/null # warm the page cache for every contender alike

echo "--- $SIZE mixed file, $(nproc) cores"
measure "zstd -1 -T2 | openssl aes-256-ctr" "$n" sh -c "zstd -q -1 -T2 -c '$work/mixed.img' | openssl enc -aes-256-ctr -K $(printf '%064x' 1) -iv $(printf '%032x' 2) -out '$work/peer.out'"
rm -f "$work/peer.out"
measure "ferry backup (zstd-1, aes-gcm)" "$n" "$BIN/controller" offline backup --repo "$work/repo" --backup b --path "$work/mixed.img" --password-file "$work/pw"
measure "ferry backup, unchanged (mtime)" "$n" "$BIN/controller" offline backup --repo "$work/repo" --backup b --path "$work/mixed.img" --password-file "$work/pw"
measure "ferry verify --keyless" "$n" "$BIN/controller" offline verify --repo "$work/repo" --backup b --keyless
measure "ferry verify (full)" "$n" "$BIN/controller" offline verify --repo "$work/repo" --backup b --password-file "$work/pw"
measure "ferry restore" "$n" "$BIN/controller" offline restore --repo "$work/repo" --backup b --to "$work/restored.img" --password-file "$work/pw"
cmp "$work/mixed.img" "$work/restored.img" && echo "restore is byte-identical"
stored=$(du -cb "$work/repo/backups/b" | tail -1 | cut -f1)
awk -v a="$n" -v b="$stored" 'BEGIN { printf "stored %.0f MB for %.0f MB of data (ratio %.2f)\n", b/1e6, a/1e6, a/b }'
rm -rf "$work/repo" "$work/restored.img" "$work/mixed.img"

if [ "$BIG" != "0" ]; then
	echo "--- $BIG: peak RSS must stay bounded by the pipeline window"
	"$BIN/ferry-datagen" mixed -seed 43 -size "$BIG" -out "$work/big.img"
	nb=$(bytes_of "$work/big.img")
	measure "ferry backup $BIG" "$nb" "$BIN/controller" offline backup --repo "$work/repo" --backup big --path "$work/big.img" --password-file "$work/pw"
	measure "ferry restore $BIG" "$nb" "$BIN/controller" offline restore --repo "$work/repo" --backup big --to "$work/big.restored" --password-file "$work/pw"
	cmp "$work/big.img" "$work/big.restored" && echo "restore is byte-identical"
fi
