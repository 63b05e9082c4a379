#!/usr/bin/env bash
# supervisord vs appvisord on the same workload; see bench/compare.py.
#
#   sudo bench/compare.sh              # 3 runs each, writes docs/benchmarks.md
#   RUNS=1 APPS=50 sudo bench/compare.sh
#   APPS=1000 sudo bench/compare.sh  # the 1,000-app section of the same file
#
# Needs root (apps run as the user avt-bench). Installs supervisor into the
# test venv (APPVISOR_TEST_VENV, default /opt/appvisor-test/venv) and builds
# release binaries unless APPVISOR_BIN_DIR points at existing ones.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="${APPVISOR_TEST_VENV:-/opt/appvisor-test/venv}"

say() { printf '==> %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || { echo "compare.sh needs root: apps run as the user avt-bench" >&2; exit 1; }

if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv with /usr/bin/python3"
    mkdir -p "$(dirname "$venv")"
    /usr/bin/python3 -m venv "$venv"
fi
if [ ! -x "$venv/bin/supervisord" ]; then
    say "pip install supervisor into $venv"
    "$venv/bin/pip" install -q supervisor
fi
chmod -R a+rX "$venv"

# What the README's Install section builds: static, against musl.
musl=x86_64-unknown-linux-musl
if [ -z "${APPVISOR_BIN_DIR:-}" ]; then
    if ! rustup target list --installed | grep -qx "$musl"; then
        say "rustup target add $musl"
        rustup target add "$musl"
    fi
    say "building appvisord and appctl (release, static: $musl)"
    (cd "$repo" && cargo build --release --target "$musl" -p appvisor-supervisor -p appvisor-ctl)
    export APPVISOR_BIN_DIR="${CARGO_TARGET_DIR:-$repo/target}/$musl/release"
fi

id avt-bench >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin --user-group avt-bench

# appvisord gives each app a session keyring of its own, charged to the
# app's user: past kernel.keys.maxkeys (200 by default) spawns of that
# user fail. Raised for the run when APPS needs it, and put back after.
maxkeys_file=/proc/sys/kernel/keys/maxkeys
maxkeys="$(cat "$maxkeys_file")"
need=$(( ${APPS:-100} + 50 ))
if [ "$maxkeys" -lt "$need" ]; then
    say "kernel.keys.maxkeys $maxkeys -> $need for the run"
    echo "$need" > "$maxkeys_file"
    trap 'echo "$maxkeys" > "$maxkeys_file"' EXIT
fi

export APPVISOR_TEST_VENV="$venv"
/usr/bin/python3 "$here/compare.py" --out "$repo/docs/benchmarks.md" "$@"
