#!/usr/bin/env bash
# appvisor quickstart: builds appvisord and appctl, makes a prefix under
# /var/lib/appvisor-demo with a venv (gunicorn) and one app, and runs the
# daemon in the foreground.
# Needs root: the app runs as its own user (appvisor-demo), which this
# script creates, and the daemon switches to it.
#
#   sudo examples/quickstart/run.sh
#
# Environment: APPVISOR_DEMO_PORT (default 8000), APPVISOR_DEMO_PREFIX (reuse
# a prefix, and its venv, between runs), APPVISOR_DEMO_RELEASE=1 (release build).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
port="${APPVISOR_DEMO_PORT:-8000}"
user="appvisor-demo"

say() { printf '==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    cat >&2 <<MSG
run.sh needs root:
  - it creates the Unix user '$user' (useradd --system) for the app, and
  - appvisord, like any supervisor that runs apps as their own users, must
    start as root to switch to them (it never runs app code as root).
Run it as: sudo $0
MSG
    exit 1
fi

profile=debug
build_flags=()
if [ "${APPVISOR_DEMO_RELEASE:-0}" = 1 ]; then
    profile=release
    build_flags=(--release)
fi
say "building appvisord and appctl ($profile)"
(cd "$repo" && cargo build "${build_flags[@]}" -p appvisor-supervisor -p appvisor-ctl)
bin="${CARGO_TARGET_DIR:-$repo/target}/$profile"

# Not under /tmp: each app gets a private, empty /tmp (sandbox.private_tmp),
# so code there would vanish from the app's view.
mkdir -p /var/lib/appvisor-demo
prefix="${APPVISOR_DEMO_PREFIX:-$(mktemp -d /var/lib/appvisor-demo/run.XXXXXX)}"
mkdir -p "$prefix"/{etc/apps.d,log,lib,run,srv/hello}
chmod 0755 "$prefix" "$prefix/srv" "$prefix/srv/hello"
say "prefix: $prefix"

if ! id "$user" >/dev/null 2>&1; then
    say "creating user $user"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
fi

# Debian's python3 rather than a pyenv build under /root, which the app
# user could not read.
python=/usr/bin/python3
[ -x "$python" ] || python="$(command -v python3)"
if [ ! -x "$prefix/venv/bin/gunicorn" ]; then
    say "creating a venv with gunicorn ($python)"
    "$python" -m venv "$prefix/venv"
    "$prefix/venv/bin/pip" install -q gunicorn
fi
chmod -R a+rX "$prefix/venv"

install -m 0644 -o "$user" -g "$(id -gn "$user")" "$here/hello.py" "$prefix/srv/hello/hello.py"
for file in appvisor.toml apps.d/hello.toml; do
    sed -e "s|@PREFIX@|$prefix|g" -e "s|@PORT@|$port|g" "$here/$file" > "$prefix/etc/$file"
done

say "validating with appctl check"
"$bin/appctl" check --config "$prefix/etc/appvisor.toml" "$prefix/etc/apps.d/hello.toml"

cat <<MSG

In another terminal, try:

  $bin/appctl --socket $prefix/run/ctl.sock status
  curl http://127.0.0.1:$port/
  curl http://127.0.0.1:9750/metrics

and restart it with:  $bin/appctl --socket $prefix/run/ctl.sock restart hello
Stop the daemon with Ctrl-C: it stops the app and exits.

MSG
say "running appvisord in the foreground"
exec "$bin/appvisord" --config "$prefix/etc/appvisor.toml" --cgroup appvisor-demo
