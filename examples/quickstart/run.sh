#!/usr/bin/env bash
# appvisor quickstart: builds appvisord and appctl (or takes installed ones),
# makes a prefix under /var/lib/appvisor-demo with a venv (pinned gunicorn,
# requirements.txt) and one app, runs the daemon, waits until the app
# answers, and prints commands that reach this daemon: its own socket, its
# own status port. Ctrl-C stops the app and the daemon.
#
# Needs root: the app runs as its own user, which this script creates, and
# the daemon switches to it.
#
#   sudo examples/quickstart/run.sh [OPTIONS]
#
# Options (each also read from the environment variable shown):
#   --port PORT         APPVISOR_DEMO_PORT         the app's port [default: 8000,
#                                                  or the next free one]
#   --status-port PORT  APPVISOR_DEMO_STATUS_PORT  the daemon's status and metrics
#                                                  port [default: 9750, or the next
#                                                  free one]
#   --prefix DIR        APPVISOR_DEMO_PREFIX       reuse a prefix (and its venv)
#                                                  between runs
#   --venv DIR          APPVISOR_DEMO_VENV         use this venv, which has gunicorn,
#                                                  instead of making one
#   --bin-dir DIR       APPVISOR_DEMO_BIN_DIR      use the appvisord and appctl in DIR
#                                                  (/usr/bin once the package is
#                                                  installed) instead of building
#   --release           APPVISOR_DEMO_RELEASE=1    build the release binaries
#   --user NAME         APPVISOR_DEMO_USER         the app's user [default:
#                                                  appvisor-demo]
#   --cgroup NAME       APPVISOR_DEMO_CGROUP       the daemon's cgroup subtree
#                                                  [default: appvisor-demo]
# A port given explicitly must be free; a default port moves on to the next
# free one.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

say() { printf '==> %s\n' "$*"; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 2; }
usage() { sed -n '/^# Options/,/^# free one/s/^# \{0,1\}//p' "$0"; }

port="${APPVISOR_DEMO_PORT:-}"
status_port="${APPVISOR_DEMO_STATUS_PORT:-}"
prefix="${APPVISOR_DEMO_PREFIX:-}"
venv="${APPVISOR_DEMO_VENV:-}"
bin_dir="${APPVISOR_DEMO_BIN_DIR:-}"
release="${APPVISOR_DEMO_RELEASE:-0}"
user="${APPVISOR_DEMO_USER:-appvisor-demo}"
cgroup="${APPVISOR_DEMO_CGROUP:-appvisor-demo}"
while [ $# -gt 0 ]; do
    case "$1" in
        --port) port="${2:?--port needs a PORT}"; shift 2 ;;
        --status-port) status_port="${2:?--status-port needs a PORT}"; shift 2 ;;
        --prefix) prefix="${2:?--prefix needs a DIR}"; shift 2 ;;
        --venv) venv="${2:?--venv needs a DIR}"; shift 2 ;;
        --bin-dir) bin_dir="${2:?--bin-dir needs a DIR}"; shift 2 ;;
        --release) release=1; shift ;;
        --user) user="${2:?--user needs a NAME}"; shift 2 ;;
        --cgroup) cgroup="${2:?--cgroup needs a NAME}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done

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

# Debian's python3 rather than a pyenv build under /root, which the app
# user could not read.
python=/usr/bin/python3
[ -x "$python" ] || python="$(command -v python3)" || die "python3 is missing: apt-get install python3 python3-venv"

# --- ports -------------------------------------------------------------------
# Whether nothing listens on 127.0.0.1:PORT (nor on the wildcard address).
port_free() {
    "$python" - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

# choose_port WHAT FLAG GIVEN DEFAULT [TAKEN]: GIVEN must be free; without
# it, DEFAULT or the next free port of the 20 after it. TAKEN is the other
# port already chosen.
choose_port() {
    local what=$1 flag=$2 given=$3 default=$4 taken=${5:-}
    if [ -n "$given" ]; then
        [[ "$given" =~ ^[0-9]+$ ]] && [ "$given" -ge 1 ] && [ "$given" -le 65535 ] \
            || die "$flag $given: not a port (1-65535)"
        [ "$given" != "$taken" ] || die "$flag $given: the other port is $given too"
        port_free "$given" || die "the $what port $given is in use: choose another with $flag"
        echo "$given"
        return
    fi
    local candidate
    for candidate in $(seq "$default" $((default + 20))); do
        if [ "$candidate" != "$taken" ] && port_free "$candidate"; then
            echo "$candidate"
            return
        fi
    done
    die "no free $what port in $default-$((default + 20)): give one with $flag"
}
port=$(choose_port app --port "$port" 8000)
status_port=$(choose_port status --status-port "$status_port" 9750 "$port")

# --- binaries ----------------------------------------------------------------
if [ -n "$bin_dir" ]; then
    bin="$(cd "$bin_dir" && pwd)"
    for program in appvisord appctl; do
        [ -x "$bin/$program" ] || die "no $program in $bin"
    done
    say "using $bin/appvisord and $bin/appctl"
else
    profile=debug
    build_flags=()
    if [ "$release" = 1 ]; then
        profile=release
        build_flags=(--release)
    fi
    build=(cargo build "${build_flags[@]}" -p appvisor-supervisor -p appvisor-ctl)
    say "building appvisord and appctl ($profile)"
    if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
        # Under sudo: build as the user whose checkout and Rust this is, so
        # target/ stays theirs and their rustup's cargo is found.
        home="$(getent passwd "$SUDO_USER" | cut -d: -f6)"
        (cd "$repo" && runuser -u "$SUDO_USER" -- env PATH="$home/.cargo/bin:$PATH" "${build[@]}")
    else
        [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
        command -v cargo >/dev/null || die "no cargo: install Rust first (README, \"Run the tests\"), or pass --bin-dir"
        (cd "$repo" && "${build[@]}")
    fi
    bin="${CARGO_TARGET_DIR:-$repo/target}/$profile"
fi

# --- prefix, user, venv, app -------------------------------------------------
# Not under /tmp: each app gets a private, empty /tmp (sandbox.private_tmp),
# so code there would vanish from the app's view.
mkdir -p /var/lib/appvisor-demo
prefix="${prefix:-$(mktemp -d /var/lib/appvisor-demo/run.XXXXXX)}"
mkdir -p "$prefix"/{etc/apps.d,log,lib,run,srv/hello}
chmod 0755 "$prefix" "$prefix/srv" "$prefix/srv/hello"
say "prefix: $prefix"

if ! id "$user" >/dev/null 2>&1; then
    say "creating user $user"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
fi

if [ -n "$venv" ]; then
    venv="$(cd "$venv" && pwd)"
    [ -x "$venv/bin/gunicorn" ] || die "no gunicorn in $venv"
else
    venv="$prefix/venv"
    stamp="$venv/.quickstart-requirements"
    if [ ! -x "$venv/bin/gunicorn" ] || ! cmp -s "$here/requirements.txt" "$stamp"; then
        say "creating a venv with $(grep -v '^#' "$here/requirements.txt" | tr '\n' ' ')($python)"
        "$python" -m venv "$venv"
        (cd / && "$venv/bin/python" -I -m pip install -q --disable-pip-version-check -r "$here/requirements.txt")
        cp "$here/requirements.txt" "$stamp"
    fi
    chmod -R a+rX "$venv"
fi

install -m 0644 -o "$user" -g "$(id -gn "$user")" "$here/hello.py" "$prefix/srv/hello/hello.py"
for file in appvisor.toml apps.d/hello.toml; do
    sed -e "s|@PREFIX@|$prefix|g" -e "s|@VENV@|$venv|g" -e "s|@USER@|$user|g" \
        -e "s|@PORT@|$port|g" -e "s|@STATUS_PORT@|$status_port|g" \
        "$here/$file" > "$prefix/etc/$file"
done

say "validating with appctl check"
"$bin/appctl" check --config "$prefix/etc/appvisor.toml" "$prefix/etc/apps.d/hello.toml"

# --- the daemon --------------------------------------------------------------
socket="$prefix/run/ctl.sock"
appctl=("$bin/appctl" --socket "$socket")
say "starting appvisord (status port $status_port, app port $port)"
"$bin/appvisord" --config "$prefix/etc/appvisor.toml" --cgroup "$cgroup" &
daemon=$!
stop() { kill -TERM "$daemon" 2>/dev/null || true; }
trap stop INT TERM

# GET http://127.0.0.1:PORT/PATH answers 200 with BODY.
http_says() {
    "$python" - "$@" <<'PY'
import sys, urllib.request
port, path, body = sys.argv[1:]
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
        sys.exit(0 if answer.status == 200 and body in answer.read().decode() else 1)
except OSError:
    sys.exit(1)
PY
}

# Wait, at most a minute, for this daemon's socket, its status port and the
# app to answer, so the commands below are known to work.
ready=false
for _ in $(seq 1 240); do
    kill -0 "$daemon" 2>/dev/null || break
    if "${appctl[@]}" status hello >/dev/null 2>&1 \
        && http_says "$status_port" /healthz ok \
        && http_says "$port" / hello; then
        ready=true
        break
    fi
    sleep 0.25
done
if ! kill -0 "$daemon" 2>/dev/null; then
    wait "$daemon" && status=0 || status=$?
    die "appvisord exited with status $status (its log is above)"
fi
if $ready; then
    say "ready: appvisord (pid $daemon) runs hello on 127.0.0.1:$port"
else
    say "hello is not ready after a minute; see its state and logs:"
    "${appctl[@]}" status hello || true
fi

cat <<MSG

In another terminal, try:

  ${appctl[*]} status
  curl http://127.0.0.1:$port/
  curl http://127.0.0.1:$status_port/metrics
  ${appctl[*]} restart hello
  ${appctl[*]} logs hello

Stop the daemon with Ctrl-C: it stops the app and exits.

MSG

# Until the daemon exits; Ctrl-C or SIGTERM (trapped above) stops it.
status=0
while :; do
    wait "$daemon" && status=0 || status=$?
    kill -0 "$daemon" 2>/dev/null || break
done
exit "$status"
