#!/usr/bin/env bash
# proto-check: fail when internal/gen is not what `make proto` would generate
# from proto/. Regenerates into a temporary copy, so the work tree is not
# touched. Run through `make proto-check`, which installs the pinned buf and
# plugins into .tools/bin first.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export PATH="$root/.tools/bin:$PATH"

# Generated files name the protoc-gen-go that wrote them, and need a runtime
# at least that new: keep the plugin equal to the runtime in go.mod.
if [ -n "${PROTOC_GEN_GO_VERSION:-}" ]; then
	runtime=$(go list -m -f '{{.Version}}' google.golang.org/protobuf)
	if [ "$runtime" != "$PROTOC_GEN_GO_VERSION" ]; then
		echo "proto-check: go.mod has google.golang.org/protobuf $runtime but the Makefile pins protoc-gen-go $PROTOC_GEN_GO_VERSION; make them equal, then run make proto" >&2
		exit 1
	fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# buf.gen.yaml writes to ../internal/gen relative to proto/, so a copy of
# proto/ in $tmp generates into $tmp/internal/gen.
cp -R proto "$tmp/proto"
(cd "$tmp/proto" && buf generate)
mkdir -p "$tmp/internal/gen"
if [ ! -d internal/gen ]; then
	echo "proto-check: internal/gen does not exist; run make proto" >&2
	exit 1
fi

if ! diff -r -q internal/gen "$tmp/internal/gen" >"$tmp/diff.txt"; then
	echo "proto-check: generated code in internal/gen is stale:" >&2
	while IFS= read -r line; do
		case $line in
		"Files internal/gen/"*)
			f=${line#Files }
			echo "  differs:       ${f%% and *}" ;;
		"Only in $tmp/internal/gen"*)
			d=${line#"Only in $tmp/"}
			echo "  missing:       ${d%%: *}/${d#*: }" ;;
		"Only in internal/gen"*)
			d=${line#Only in }
			echo "  not generated: ${d%%: *}/${d#*: }" ;;
		*) echo "  $line" ;;
		esac
	done <"$tmp/diff.txt" >&2
	echo "proto-check: run make proto" >&2
	exit 1
fi
echo "proto-check: internal/gen is up to date"
