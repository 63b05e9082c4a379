"""What the benchmark scripts share, so each says only what it measures.

- where a run lives: a private directory under BENCH_DIR ([`bench_root`]),
  with the flood app copied in ([`copy_flood`]);
- who the apps run as: the user BENCH_USER (default avt-bench), created
  if missing ([`ensure_user`]), with room in kernel.keys.maxkeys for
  their keyrings ([`raised_maxkeys`]);
- two builds side by side: `--old DIR --new DIR` ([`builds_parser`]),
  run alternately, old then new, so load from elsewhere on the host falls
  on both alike ([`alternate`]);
- stopping a daemon the way that leaves nothing behind ([`stop`],
  [`started`]).

This module imports none of the scripts: compare.py imports it, and a
script run as `__main__` would otherwise load a second copy of itself.
"""

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FLOOD = os.path.join(HERE, "..", "tests", "apps", "flood.py")
# Not under /tmp: appvisord gives each app a private /tmp, which would hide
# what a run's directory holds (the flood app's code) from its apps.
BENCH_DIR = "/var/lib/appvisor-bench"
USER = os.environ.get("BENCH_USER", "avt-bench")
MAXKEYS = "/proc/sys/kernel/keys/maxkeys"


def bench_root(prefix):
    """A new directory under BENCH_DIR that the apps can read."""
    os.makedirs(BENCH_DIR, exist_ok=True)
    root = tempfile.mkdtemp(prefix=prefix, dir=BENCH_DIR)
    os.chmod(root, 0o755)
    return root


def copy_flood(root):
    """tests/apps/flood.py into `root`, readable by the apps."""
    path = os.path.join(root, "flood.py")
    shutil.copy(FLOOD, path)
    os.chmod(path, 0o644)


def ensure_user():
    """Creates USER, a system user with no home and no shell, if missing."""
    if subprocess.run(["id", USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", "--user-group", USER], check=True)


@contextlib.contextmanager
def raised_maxkeys(need):
    """kernel.keys.maxkeys at least `need` inside the block, put back after.

    appvisord gives each app a session keyring of its own, charged to the
    app's user: past maxkeys (200 by default) spawns of that user fail.
    """
    with open(MAXKEYS) as f:
        before = int(f.read())
    if before < need:
        with open(MAXKEYS, "w") as f:
            f.write(str(need))
    try:
        yield
    finally:
        if before < need:
            with open(MAXKEYS, "w") as f:
                f.write(str(before))


def builds_parser(description):
    """An argument parser with the two builds compared, `--old` and `--new`:
    directories holding an `appvisord` and an `appctl`."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="directory of the build to compare with")
    parser.add_argument("--new", required=True, help="directory of the build measured")
    return parser


def builds(args):
    """[("old", DIR), ("new", DIR)], absolute, from `builds_parser`'s args."""
    return [("old", os.path.abspath(args.old)), ("new", os.path.abspath(args.new))]


def alternate(args, runs):
    """(run, name, bin_dir) for each of `runs` runs, old then new."""
    for run in range(runs):
        for name, bin_dir in builds(args):
            yield run, name, bin_dir


def stop(proc, timeout):
    """SIGTERM, so the daemon stops its apps and removes its cgroups
    (SIGKILL would leave both behind); SIGKILL only past `timeout` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def started(daemon, timeout):
    """`daemon` started (its process inside the block), then stopped
    ([`stop`]) and its run directory removed, whatever the block did."""
    proc = daemon.start()
    try:
        yield proc
    finally:
        stop(proc, timeout)
        shutil.rmtree(daemon.root, ignore_errors=True)


def recv_all(sock):
    """Everything `sock` sends until it closes."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
