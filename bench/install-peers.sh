#!/usr/bin/env bash
# install-peers.sh installs the programs that ferry's peer benchmarks compare
# against, on a fresh Debian machine. It is idempotent: a tool already present
# is left alone, and apt-get update runs only when a package is missing, so a
# second run is quick and needs no network.
#
# Debian packages: zstd, openssl, rsync, jq (bench/wan.sh reads JSON), GNU time
# (/usr/bin/time).
# restic 0.18.1: built from the Go module proxy into $(pwd)/.tools/bin, so it
# is project-local and not mixed up with a system restic of another version.
#
# Usage: bench/install-peers.sh   (run from the repository root)
set -euo pipefail

RESTIC_VERSION=${RESTIC_VERSION:-v0.18.1}
TOOLS_BIN=${TOOLS_BIN:-"$(pwd)/.tools/bin"}

# command name -> Debian package. GNU time is checked by path because "time"
# is also a shell keyword, which `command -v` would find.
declare -A pkg_for=(
  [zstd]=zstd
  [openssl]=openssl
  [rsync]=rsync
  [jq]=jq
)
missing=()
for cmd in "${!pkg_for[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_for[$cmd]}")
done
[ -x /usr/bin/time ] || missing+=(time)

if [ ${#missing[@]} -gt 0 ]; then
  SUDO=
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "install-peers: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

mkdir -p "$TOOLS_BIN"
want=${RESTIC_VERSION#v}
have=
if [ -x "$TOOLS_BIN/restic" ]; then
  # "restic 0.18.1 compiled with go1.26 on linux/amd64"
  have=$("$TOOLS_BIN/restic" version 2>/dev/null | awk '{print $2}')
fi
if [ "$have" != "$want" ]; then
  command -v go >/dev/null 2>&1 || { echo "install-peers: go is needed to build restic" >&2; exit 1; }
  echo "install-peers: building restic $RESTIC_VERSION into $TOOLS_BIN" >&2
  # GOFLAGS from the environment (e.g. -mod=vendor) must not leak into a
  # build of another module.
  GOFLAGS= GOBIN="$TOOLS_BIN" go install "github.com/restic/restic/cmd/restic@$RESTIC_VERSION"
fi

echo "install-peers: ok: $(zstd --version | head -1); $(openssl version); $(rsync --version | head -1); $(jq --version); $(/usr/bin/time --version 2>&1 | head -1); $("$TOOLS_BIN/restic" version)" >&2
