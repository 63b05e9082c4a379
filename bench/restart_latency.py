"""Restart and reload latency of a healthy gunicorn app, against a baseline.

Two builds of appvisord and appctl (--bin, and --baseline, e.g. a worktree
of an older commit built the same way), each running one daemon with the
quickstart's own app file (examples/quickstart/apps.d/hello.toml: gunicorn
with 2 sync workers on a held socket, readiness notify with a url), as the
user avt-bench. Then RUNS rounds; in each, for both daemons, in alternating
order so that the machine's load falls on both alike:

- restart: wall time of `appctl restart hello` (stop-start, the default);
- restart, serving: from the same start until a `GET /` sent right after
  `appctl` returned is answered. A daemon that reports a restart done
  before the workers serve leaves clients waiting in the held socket's
  backlog; this is the time they wait;
- reload: wall time of `appctl reload hello`.

Between measurements the app settles: it answers, and both workers have
booted. Prints the medians; with --out, writes the "Restart and reload
latency" section of that file (docs/benchmarks.md), replacing it if there.
"""

import argparse
import json
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import time

from benchlib import BENCH_DIR, USER, bench_root, recv_all, stop
from compare import VENV, log, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
QUICKSTART = os.path.join(REPO, "examples", "quickstart")
SECTION = "## Restart and reload latency"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, timeout=30.0):
    """GET / on 127.0.0.1:port: True for a 200, read to EOF."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            data = recv_all(s)
        return data.startswith(b"HTTP/1.") and data.split(None, 2)[1] == b"200"
    except OSError:
        return False


class Daemon:
    """One appvisord of one build, serving the quickstart's app."""

    def __init__(self, label, bin_dir):
        self.label = label
        self.bin = bin_dir
        self.root = bench_root("lat-")
        self.port = free_port()
        self.sock = os.path.join(self.root, "ctl.sock")
        self.conf = os.path.join(self.root, "appvisor.toml")
        apps_dir = os.path.join(self.root, "apps.d")
        srv = os.path.join(self.root, "srv", "hello")
        for d in (apps_dir, srv, os.path.join(self.root, "logs"), os.path.join(self.root, "state")):
            os.makedirs(d)
        os.chmod(os.path.join(self.root, "srv"), 0o755)
        os.chmod(srv, 0o755)
        shutil.copy(os.path.join(QUICKSTART, "hello.py"), os.path.join(srv, "hello.py"))
        os.chmod(os.path.join(srv, "hello.py"), 0o644)
        with open(self.conf, "w") as f:
            f.write(
                'apps_dir = "%s"\nlog_dir = "%s/logs"\nstate_dir = "%s/state"\n'
                '[control]\nsocket = "%s"\nadmin_groups = []\n[status]\nlisten = ""\n'
                % (apps_dir, self.root, self.root, self.sock)
            )
        with open(os.path.join(QUICKSTART, "apps.d", "hello.toml")) as f:
            app = f.read()
        app = (app.replace("@VENV@", VENV)
                  .replace("@PREFIX@", self.root)
                  .replace("@PORT@", str(self.port))
                  .replace("@USER@", USER))
        if "@" in app:
            raise SystemExit("examples/quickstart/apps.d/hello.toml has placeholders this "
                             "script does not fill in:\n" + app)
        with open(os.path.join(apps_dir, "hello.toml"), "w") as f:
            f.write(app)
        self.proc = subprocess.Popen(
            [os.path.join(self.bin, "appvisord"), "--config", self.conf, "--cgroup",
             "avl-%d-%s" % (os.getpid(), label)],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.root, "daemon.log"), "w"),
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "NO_COLOR": "1"},
        )
        wait_for("%s: hello running" % label, lambda: self.state() == "running", interval=0.05)
        self.settle()

    def ctl(self, *args):
        return subprocess.run(
            [os.path.join(self.bin, "appctl"), "--socket", self.sock] + list(args),
            capture_output=True, text=True,
        )

    def state(self):
        try:
            apps = json.loads(self.ctl("status", "--json").stdout)["apps"]
        except (ValueError, KeyError):
            return None
        return next((a["state"] for a in apps if a["name"] == "hello"), None)

    def workers(self):
        """Processes of the app but its main one (its gunicorn workers)."""
        try:
            apps = json.loads(self.ctl("status", "--json").stdout)["apps"]
            main = next(a["pid"] for a in apps if a["name"] == "hello")
            with open("/proc/%d/task/%d/children" % (main, main)) as f:
                return len(f.read().split())
        except (ValueError, KeyError, StopIteration, OSError, TypeError):
            return 0

    def settle(self):
        """Running, answering, both workers there, and a moment of quiet."""
        wait_for("%s: hello answering" % self.label,
                 lambda: self.state() == "running" and get(self.port, timeout=5), interval=0.05)
        wait_for("%s: both workers" % self.label, lambda: self.workers() >= 2, interval=0.05)
        time.sleep(0.5)

    def action(self, verb):
        """Seconds until `appctl VERB hello` returned, and until a GET sent
        then was answered."""
        start = time.monotonic()
        out = self.ctl(verb, "hello")
        returned = time.monotonic() - start
        if out.returncode != 0:
            raise SystemExit("%s: appctl %s hello exited %d: %s%s"
                             % (self.label, verb, out.returncode, out.stdout, out.stderr))
        if not get(self.port):
            raise SystemExit("%s: no answer after %s" % (self.label, verb))
        served = time.monotonic() - start
        self.settle()
        return returned, served

    def stop(self):
        stop(self.proc, timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


def commit_of(bin_dir):
    """The commit a build's checkout is at, if it is one."""
    for d in (bin_dir, os.path.dirname(bin_dir), os.path.dirname(os.path.dirname(bin_dir)),
              os.path.dirname(os.path.dirname(os.path.dirname(bin_dir)))):
        out = subprocess.run(["git", "-C", d, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.strip()
    return "?"


ROWS = [
    ("restart", "`appctl restart` returns (s)"),
    ("restart_served", "restart: a request sent then is answered (s, from the restart's start)"),
    ("reload", "`appctl reload` returns (s)"),
]


def section(results, labels, runs):
    lines = [
        SECTION,
        "",
        "Written by `bench/restart_latency.py` (%s, %d CPUs): one gunicorn app with the "
        "quickstart's own app file (2 sync workers, held socket, readiness notify with a "
        "url), restarted and reloaded by `appctl`, %d runs of each build interleaved on the "
        "same machine, in seconds." % (time.strftime("%Y-%m-%d"), os.cpu_count(), runs),
        "",
        "| metric | %s |" % " | ".join(labels),
        "|" + " --- |" * (len(labels) + 1),
    ]
    for key, label in ROWS:
        cells = ["%.2f (%.2f-%.2f)" % (statistics.median(results[l][key]), min(results[l][key]),
                                       max(results[l][key])) for l in labels]
        lines.append("| %s | %s |" % (label, " | ".join(cells)))
    lines += [
        "",
        "Each cell: the median (the fastest and slowest run). Before the private probe socket "
        "(issue 8), `restart` returned at gunicorn's READY=1, which its arbiter sends before "
        "any worker has imported the app, and `reload` as soon as the signal was sent; now "
        "both return once a worker of the new instance (or a new worker) answers through the "
        "instance's own probe socket. The probe's first attempt waits in that socket's "
        "backlog until a worker accepts it, so a healthy restart pays no retry interval: "
        "the restart is gunicorn stopping and booting, and ends when it serves. A reload "
        "now lasts as long as gunicorn takes to replace its workers.",
    ]
    return "\n".join(lines) + "\n"


def write_section(path, text):
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    at = old.find(SECTION)
    if at < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        rest = old.find("\n## ", at + len(SECTION))
        new = old[:at] + text + (old[rest:] if rest >= 0 else "")
    with open(path, "w") as f:
        f.write(new)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True, help="directory of the appvisord and appctl measured")
    parser.add_argument("--baseline", required=True, help="directory of the builds to compare with")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out")
    args = parser.parse_args()
    pwd.getpwnam(USER)
    os.makedirs(BENCH_DIR, exist_ok=True)
    builds = [("before (%s)" % commit_of(args.baseline), args.baseline),
              ("now (%s)" % commit_of(args.bin), args.bin)]
    labels = [label for label, _ in builds]
    daemons = []
    try:
        for i, (label, bin_dir) in enumerate(builds):
            daemons.append(Daemon("b%d" % i, bin_dir))
        results = {label: {key: [] for key, _ in ROWS} for label in labels}
        for run in range(args.runs):
            order = list(zip(labels, daemons))
            if run % 2:
                order.reverse()
            for label, d in order:
                restart, served = d.action("restart")
                reload, _ = d.action("reload")
                r = results[label]
                r["restart"].append(restart)
                r["restart_served"].append(served)
                r["reload"].append(reload)
                log("run %d %s: restart %.3f s (serving %.3f s), reload %.3f s"
                    % (run + 1, label, restart, served, reload))
    finally:
        for d in daemons:
            d.stop()
    text = section(results, labels, args.runs)
    print("\n" + text)
    if args.out:
        write_section(args.out, text)
        log("wrote " + args.out)


if __name__ == "__main__":
    sys.exit(main())
