"""supervisord and appvisord side by side on the same workload.

For each daemon and each run: APPS long-running apps (`sleep N`, each with
its own argument so /proc tells them apart) as the user avt-bench, then

- start: from exec of the daemon until every app's program runs (polling
  the daemon's children), both with a start_secs/startsecs of 0: with 1 s,
  both would only measure the wait;
- start as status shows it: from exec of the daemon until its own status
  command (supervisorctl status / appctl status --json) says every app
  runs, polled back to back: what an operator or a deploy script waits for;
- idle: the daemon's context switches over 10 s with nothing happening,
  from when the start-up's tail is done (no context switch for a second,
  at most 5 s after all running);
- rss: the daemon's VmRSS with every app running, at the end of those idle
  10 s, and the private part of it (RssAnon), since code pages mapped from
  disk are shared with the page cache: what the host carries while the apps
  run, without what start-up held for a moment (appvisord's blocking-pool
  threads end after 10 s idle; bench/rss.py measures the same way);
- status: median latency of the status command (supervisorctl / appctl);
- metrics: median latency of appvisord's `/metrics` (supervisord has none);
- update: median latency of the update command (supervisorctl update /
  appctl update) after one app's file changed in a way that needs no
  restart (its stop timeout), the file changed back and forth;
- respawn: SIGKILL an app that has been up past start_secs and the 10 s
  after readiness within which appvisord counts a crash as a failed start
  (and backs off), time until a new child of the daemon runs its command
  line (polling only the pids handed out since the kill, `ns_last_pid`: a
  few small files, so the poll itself costs microseconds, not milliseconds);
- capture: daemon CPU (utime+stime) while one extra app writes 200 MiB of
  numbered lines; every line must be in the log files, in order;
- stop: from SIGTERM to the daemon's exit with every app gone.

Prints medians and ratios and writes them as a markdown table.
"""

import argparse
import glob
import socket
import urllib.request
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import BENCH_DIR, FLOOD, HERE, USER, bench_root, copy_flood  # noqa: E402,F401

# supervisor/src/app/backoff.rs, STABLE_AFTER_READY.
STABLE_AFTER_READY_S = 10
VENV = os.environ.get("APPVISOR_TEST_VENV", "/opt/appvisor-test/venv")
BIN = os.environ.get("APPVISOR_BIN_DIR", "")
TICKS = os.sysconf("SC_CLK_TCK")
BASE_ARG = 1000000


def build_kind(path):
    """'static' when the ELF file has no program interpreter (PT_INTERP),
    else 'dynamic': the two builds differ in resident memory by the size of
    libc and friends."""
    import struct
    with open(path, "rb") as f:
        elf = f.read(1 << 16)
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    interp = any(struct.unpack_from("<I", elf, phoff + i * phentsize)[0] == 3
                 for i in range(phnum))
    return "dynamic, glibc" if interp else "static, musl"


def log(msg):
    print(msg, flush=True)


def proc_field(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def cpu_secs(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def ctxt(pid):
    """Context switches of each thread, by thread id: /proc/PID/status
    counts only the main thread, and a tokio daemon's work happens on the
    others."""
    out = {}
    for task in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/status" % (pid, task)) as f:
                out[task] = sum(int(line.split()[1]) for line in f
                                if line.split(":")[0] in ("voluntary_ctxt_switches",
                                                          "nonvoluntary_ctxt_switches"))
        except OSError:
            pass
    return out


def ctxt_since(pid, before):
    """Context switches since `before` (from ctxt) of the threads alive now:
    a thread that ended in between (a blocking-pool thread leaving 10 s
    after its last job) took its count with it."""
    return sum(n - before.get(task, 0) for task, n in ctxt(pid).items())


def pids_with_cmdline(needle):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open("/proc/%s/stat" % entry) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if cmd == needle and state not in ("Z", "X"):
            out.append(int(entry))
    return out


def alive(pid):
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def child_pids(daemon):
    """Pids of the live children of process `daemon` (of all its threads)."""
    out = []
    try:
        tasks = os.listdir("/proc/%d/task" % daemon)
    except OSError:
        return out
    for task in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (daemon, task)) as f:
                out.extend(int(kid) for kid in f.read().split())
        except OSError:
            continue
    return out


class NewChild:
    """Whether a process started after this object was made runs `cmd` as
    a child of process `daemon`. Polls the pids handed out since
    (`/proc/sys/kernel/ns_last_pid`), so each poll reads a few small files
    whatever the number of apps: listing the daemon's children, as before,
    took about a millisecond a poll with 1,000 apps, which the respawn
    latency counted."""

    def __init__(self, daemon, cmd):
        self.daemon = daemon
        self.cmd = cmd.encode()
        self.before = set(child_pids(daemon))
        self.first = last_pid() + 1

    def running(self):
        last = last_pid()
        if last == self.first - 1:  # no pid handed out yet
            return False
        if last < self.first:  # the pids wrapped around: rare, slow but right
            pids = set(child_pids(self.daemon)) - self.before
        else:
            pids = range(self.first, last + 1)
        for pid in pids:
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    if f.read().replace(b"\0", b" ").strip() != self.cmd:
                        continue
                with open("/proc/%d/stat" % pid) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == self.daemon:
                        return True
            except (OSError, ValueError, IndexError):
                continue
        return False


def last_pid():
    with open("/proc/sys/kernel/ns_last_pid") as f:
        return int(f.read())


class ProgramsSeen:
    """Which of `programs` run as children of process `daemon`, polled
    cheaply. Each poll looks only at pids handed out since the last one
    (`/proc/sys/kernel/ns_last_pid`), keeping those that are the daemon's
    children, and reads the command line only of children not matched yet
    (one that matched has exec'd its program and keeps it until it exits).
    Listing the daemon's children every poll, as before, cost the harness
    about 0.2 s of CPU during a 1,000-app start, taken from whichever
    daemon was being timed. Once all seem matched, one listing checks that
    they still run."""

    def __init__(self, daemon, programs):
        self.daemon = daemon
        self.programs = programs
        self.matched = {}
        self.pending = set()  # children not yet running one of `programs`
        self.next = daemon + 1  # the daemon's children have later pids
        # Pids handed out but not yet in /proc: the kernel hands out the pid
        # before the new process is visible (a clone into a cgroup may wait
        # in between), so each is looked at again for a second.
        self.unseen = {}

    def _new_children(self):
        last = last_pid()
        if last < self.next - 1:  # the pids wrapped around: rare, slow but right
            self.next = last + 1
            self.unseen.clear()
            return set(child_pids(self.daemon)) - set(self.matched)
        now = time.monotonic()
        for pid in range(self.next, last + 1):
            self.unseen[pid] = now + 1.0
        self.next = last + 1
        kids = set()
        for pid, until in list(self.unseen.items()):
            try:
                with open("/proc/%d/stat" % pid) as f:
                    stat = f.read()
            except OSError:
                if now > until:
                    del self.unseen[pid]  # it came and went, or never was
                continue
            del self.unseen[pid]
            try:
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.daemon:
                    kids.add(pid)
            except (ValueError, IndexError):
                continue
        return kids

    def all_running(self):
        self.pending |= self._new_children()
        for kid in list(self.pending):
            try:
                with open("/proc/%d/cmdline" % kid, "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                self.pending.discard(kid)  # gone
                continue
            if cmd in self.programs:
                self.matched[kid] = cmd
                self.pending.discard(kid)
        if len(set(self.matched.values())) < len(self.programs):
            return False
        kids = set(child_pids(self.daemon))
        self.matched = {pid: cmd for pid, cmd in self.matched.items() if pid in kids}
        return len(set(self.matched.values())) == len(self.programs)


def wait_for(what, cond, timeout=120.0, interval=0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(interval)
    raise SystemExit("timed out after %ss waiting for %s" % (timeout, what))


def check_lines(files, total):
    """Every numbered line 1..total exactly once, in order across files."""
    chunks = []
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        first = data.find(b"line ")
        key = int(data[first + 5:first + 14]) if first >= 0 else 1 << 62
        chunks.append((key, data))
    chunks.sort()
    expected = 1
    for _, data in chunks:
        for line in data.split(b"\n"):
            if not line.startswith(b"line "):
                continue
            n = int(line[5:14])
            if n != expected:
                return "line %d missing or out of order (found %d)" % (expected, n)
            expected += 1
    if expected - 1 != total:
        return "%d of %d lines" % (expected - 1, total)
    return None


class Supervisord:
    name = "supervisord"
    has_metrics = False

    def __init__(self, root, apps):
        self.root = root
        self.apps = apps
        self.conf = os.path.join(root, "supervisord.conf")
        self.sock = os.path.join(root, "supervisor.sock")
        progs = []
        for i in range(apps):
            progs.append(
                "[program:app%d]\ncommand=/bin/sleep %d\nuser=%s\nstartsecs=0\n"
                "autorestart=true\nstopwaitsecs=10\nstdout_logfile=%s/app%d.log\n"
                "stderr_logfile=%s/app%d.err\n" % (i, BASE_ARG + i, USER, root, i, root, i)
            )
        progs.append(
            "[program:flood]\ncommand=/usr/bin/python3 %s/flood.py 200\nuser=%s\n"
            "autostart=false\nstartsecs=0\nstdout_logfile=%s/flood.log\n"
            "stdout_logfile_maxbytes=50MB\nstdout_logfile_backups=10\n" % (root, USER, root)
        )
        with open(self.conf, "w") as f:
            f.write(
                "[supervisord]\nnodaemon=true\nlogfile=%s/supervisord.log\npidfile=%s/supervisord.pid\n"
                "childlogdir=%s\n[unix_http_server]\nfile=%s\n"
                "[rpcinterface:supervisor]\n"
                "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
                "[supervisorctl]\nserverurl=unix://%s\n\n%s"
                % (root, root, root, self.sock, self.sock, "\n".join(progs))
            )

    def start(self):
        return subprocess.Popen(
            [os.path.join(VENV, "bin/supervisord"), "-c", self.conf],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def ctl(self, *args):
        return subprocess.run(
            [os.path.join(VENV, "bin/supervisorctl"), "-c", self.conf] + list(args),
            capture_output=True, text=True,
        )

    def running(self):
        out = self.ctl("status").stdout
        return sum(1 for l in out.splitlines() if l.startswith("app") and " RUNNING " in l)

    def status(self):
        self.ctl("status")

    def start_flood(self):
        self.ctl("start", "flood")

    def change_one(self, n):
        """Changes app1's stop timeout (10 s or 11 s by `n`'s parity)."""
        with open(self.conf) as f:
            text = f.read()
        old, new = (10, 11) if n % 2 == 0 else (11, 10)
        anchor = "stdout_logfile=%s/app1.log" % self.root
        text = text.replace("stopwaitsecs=%d\n%s" % (old, anchor), "stopwaitsecs=%d\n%s" % (new, anchor))
        with open(self.conf, "w") as f:
            f.write(text)

    def update(self):
        self.ctl("update")

    def flood_files(self):
        return glob.glob(os.path.join(self.root, "flood.log*"))


class Appvisord:
    """One appvisord in `root` with `apps` sleep apps (and the flood app,
    not started): the build in `bin_dir` (default BIN), in the cgroup
    CGROUP-PID."""
    name = "appvisord"
    has_metrics = True

    def __init__(self, root, apps, bin_dir=None, cgroup="avb"):
        self.root = root
        self.apps = apps
        self.bin_dir = bin_dir
        self.cgroup = cgroup
        self.sock = os.path.join(root, "ctl.sock")
        self.conf = os.path.join(root, "appvisor.toml")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.status_address = "127.0.0.1:%d" % probe.getsockname()[1]
        apps_dir = os.path.join(root, "apps.d")
        os.makedirs(apps_dir)
        os.makedirs(os.path.join(root, "logs"))
        os.makedirs(os.path.join(root, "state"))
        with open(self.conf, "w") as f:
            f.write(
                'apps_dir = "%s"\nlog_dir = "%s/logs"\nstate_dir = "%s/state"\n'
                '[control]\nsocket = "%s"\nadmin_groups = []\n[status]\nlisten = "%s"\n'
                % (apps_dir, root, root, self.sock, self.status_address)
            )
        for i in range(apps):
            with open(os.path.join(apps_dir, "app%d.toml" % i), "w") as f:
                f.write(
                    'user = "%s"\ncommand = ["/bin/sleep", "%d"]\ndirectory = "/"\n'
                    '[restart]\npolicy = "always"\nstart_secs = "0s"\n[stop]\ntimeout = "10s"\n'
                    % (USER, BASE_ARG + i)
                )
        with open(os.path.join(apps_dir, "flood.toml"), "w") as f:
            f.write(
                'user = "%s"\ncommand = ["/usr/bin/python3", "%s/flood.py", "200"]\n'
                'directory = "%s"\nautostart = false\n[sandbox]\nread_only = ["%s"]\n'
                '[logs]\nmax_size = "50MiB"\nkeep = 10\n' % (USER, root, root, root)
            )

    def start(self, log_filter=None):
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "NO_COLOR": "1"}
        if log_filter:
            env["APPVISOR_LOG"] = log_filter
        return subprocess.Popen(
            [os.path.join(self.bin_dir or BIN, "appvisord"), "--config", self.conf, "--cgroup",
             "%s-%d" % (self.cgroup, os.getpid())],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.root, "daemon.log"), "w"),
            env=env,
        )

    def ctl(self, *args):
        return subprocess.run(
            [os.path.join(self.bin_dir or BIN, "appctl"), "--socket", self.sock] + list(args),
            capture_output=True, text=True,
        )

    def running(self):
        import json
        out = self.ctl("status", "--json").stdout
        try:
            apps = json.loads(out)["apps"]
        except (ValueError, KeyError):
            return 0
        return sum(1 for a in apps if a["name"].startswith("app") and a["state"] == "running")

    def status(self):
        self.ctl("status")

    def start_flood(self):
        self.ctl("start", "flood", "--no-wait")

    def metrics(self):
        with urllib.request.urlopen("http://%s/metrics" % self.status_address, timeout=30) as r:
            r.read()

    def metrics_text(self):
        with urllib.request.urlopen("http://%s/metrics" % self.status_address, timeout=30) as r:
            return r.read().decode()

    def change_one(self, n):
        """Changes app1's stop timeout (10 s or 11 s by `n`'s parity)."""
        path = os.path.join(self.root, "apps.d", "app1.toml")
        with open(path) as f:
            text = f.read()
        old, new = (10, 11) if n % 2 == 0 else (11, 10)
        text = text.replace('timeout = "%ds"' % old, 'timeout = "%ds"' % new)
        with open(path, "w") as f:
            f.write(text)

    def update(self):
        out = self.ctl("update")
        if out.returncode != 0:
            raise SystemExit("appctl update failed: %s" % out.stderr)

    def flood_files(self):
        return [p for p in glob.glob(os.path.join(self.root, "logs", "flood", "*")) if "stdout" in p]


def wait_captured(d, total, what, timeout):
    """Waits until the flood app's last line, after `total` lines, is in
    one of `d`'s log files."""
    done = b"flood done %d" % total

    def flood_done():
        for path in d.flood_files():
            try:
                with open(path, "rb") as f:
                    f.seek(max(0, os.path.getsize(path) - 4096))
                    if done in f.read():
                        return True
            except OSError:
                pass
        return False

    wait_for(what, flood_done, timeout=timeout, interval=0.05)


def one_run(kind, apps):
    root = bench_root("avb-")
    copy_flood(root)
    d = kind(root, apps)
    res = {}
    t0 = time.monotonic()
    proc = d.start()
    try:
        # Timed: until every app's own program runs, seen in the daemon's
        # children (cheap to poll, the same for both daemons). Then, not
        # timed, until the daemon's status agrees.
        seen = ProgramsSeen(proc.pid, set("/bin/sleep %d" % (BASE_ARG + i) for i in range(apps)))
        # Every 2 ms with 100 apps, 10 ms from 500: each poll lists the
        # daemon's children, which costs CPU the daemon timed shares.
        wait_for("%d app programs running under %s" % (apps, d.name), seen.all_running,
                 interval=min(0.01, 0.002 * max(1, apps / 100)))
        res["start_s"] = time.monotonic() - t0
        wait_for("%d apps running under %s" % (apps, d.name), lambda: d.running() == apps,
                 interval=0, timeout=600)
        all_running = time.monotonic()
        res["start_status_s"] = all_running - t0
        # Idle once the start-up's tail is done (appvisord's crash-record
        # writer finishing the last apps' records, supervisord's last log
        # writes): no context switch for a second, or 5 s at most.
        settle_end = time.monotonic() + 5
        last = sum(ctxt(proc.pid).values())
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 1 and time.monotonic() < settle_end:
            time.sleep(0.1)
            now = sum(ctxt(proc.pid).values())
            if now != last:
                last, quiet_since = now, time.monotonic()
        c0 = ctxt(proc.pid)
        time.sleep(10)
        res["idle_ctxt_10s"] = ctxt_since(proc.pid, c0)
        res["rss_mib"] = proc_field(proc.pid, "VmRSS") / 1024.0
        res["anon_mib"] = proc_field(proc.pid, "RssAnon") / 1024.0
        lat = []
        for _ in range(10):
            s = time.monotonic()
            d.status()
            lat.append(time.monotonic() - s)
        res["status_ms"] = statistics.median(lat) * 1000
        res["metrics_ms"] = None
        if d.has_metrics:
            lat = []
            for _ in range(10):
                s = time.monotonic()
                d.metrics()
                lat.append(time.monotonic() - s)
            res["metrics_ms"] = statistics.median(lat) * 1000
        lat = []
        for n in range(6):
            d.change_one(n)
            s = time.monotonic()
            d.update()
            lat.append(time.monotonic() - s)
        res["update_ms"] = statistics.median(lat) * 1000
        # A crash within 10 s of ready is a failed start for appvisord,
        # which backs off: the respawn measured is that of an app up longer.
        time.sleep(max(0.0, STABLE_AFTER_READY_S + 1 - (time.monotonic() - all_running)))
        cmd = "/bin/sleep %d" % BASE_ARG
        # This daemon's own: another run of this benchmark on the host has
        # the same command lines.
        old = [p for p in pids_with_cmdline(cmd) if p in set(child_pids(proc.pid))]
        if len(old) != 1:
            raise SystemExit("expected one %r, found %s" % (cmd, old))
        new = NewChild(proc.pid, cmd)
        s = time.monotonic()
        os.kill(old[0], signal.SIGKILL)
        respawned = new.running
        wait_for("respawn of app0", respawned, timeout=30, interval=0.0002)
        res["respawn_ms"] = (time.monotonic() - s) * 1000
        total = 200 * 1024 * 1024 // 64
        cpu0 = cpu_secs(proc.pid)
        s = time.monotonic()
        d.start_flood()
        wait_captured(d, total, "200 MiB captured by %s" % d.name, timeout=300)
        res["capture_cpu_s"] = cpu_secs(proc.pid) - cpu0
        res["capture_wall_s"] = time.monotonic() - s
        problem = check_lines(d.flood_files(), total)
        res["capture_lines"] = "all" if problem is None else problem
        apps_pids = set(child_pids(proc.pid))
        s = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        wait_for("every app gone", lambda: not any(alive(pid) for pid in apps_pids), timeout=30)
        res["stop_s"] = time.monotonic() - s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        empty_files(root)
        LEFT.append(root)
    return res


# The runs' directories, removed after the last run. Removing one right
# after its run made the next run's start pay for it: on ext4 without a
# journal (this host's), each new inode is found by scanning past those
# freed in the last minute, so a start after a run deleting thousands of
# files took up to twice as long, whichever daemon it was.
LEFT = []


# When the last run of this script removed its directories, and how long
# ext4 keeps freed inodes in the way of new ones (RECENTCY_DIRTY, 300 s,
# plus the minute of RECENTCY_MIN): a start within that time pays for them.
CLEANED = os.path.join(BENCH_DIR, ".cleaned")
INODES_RECENT_S = 360


def wait_after_cleanup():
    try:
        with open(CLEANED) as f:
            left = float(f.read()) + INODES_RECENT_S - time.time()
    except (OSError, ValueError):
        return
    if left > 0:
        log("waiting %d s: the previous run's files were removed %d s ago, and this "
            "file system scans past inodes freed in the last %d s" % (left, INODES_RECENT_S - left, INODES_RECENT_S))
        time.sleep(left)


def empty_files(root):
    """Truncates every file under `root`: their space goes at once, their
    inodes with the directory after the last run."""
    for where, _, files in os.walk(root):
        for name in files:
            path = os.path.join(where, name)
            try:
                if os.path.isfile(path) and not os.path.islink(path):
                    os.truncate(path, 0)
            except OSError:
                pass


ROWS = [
    ("start_s", "start to all running (s)", "%.2f"),
    ("start_status_s", "start to all running as the status command shows it (s)", "%.2f"),
    ("rss_mib", "daemon RSS with all running, 10 s idle (MiB)", "%.1f"),
    ("anon_mib", "of which private (RssAnon, MiB); the rest is code mapped from disk", "%.1f"),
    ("idle_ctxt_10s", "daemon context switches (all threads), 10 s idle", "%d"),
    ("status_ms", "status command latency (ms)", "%.1f"),
    ("metrics_ms", "`/metrics` latency (ms)", "%.1f"),
    ("update_ms", "update with one changed file (ms)", "%.1f"),
    ("respawn_ms", "crash-to-respawn latency (ms)", "%.1f"),
    ("capture_cpu_s", "daemon CPU to capture 200 MiB of stdout (s)", "%.2f"),
    ("capture_wall_s", "wall time to capture 200 MiB (s)", "%.2f"),
    ("stop_s", "SIGTERM to all stopped (s)", "%.2f"),
]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def targets(apps, sup, app, results):
    """The design targets for this number of apps: (target, met, result)."""
    ratio = lambda key: app[key] / sup[key]
    lossless = all(r["capture_lines"] == "all" for r in results["appvisord"])
    rows = [
        ("daemon RSS at most a fifth of supervisord's", app["rss_mib"] <= sup["rss_mib"] / 5,
         "%.2f of it" % ratio("rss_mib")),
        ("no wakeups when idle", app["idle_ctxt_10s"] == 0,
         "%d context switches in 10 s" % app["idle_ctxt_10s"]),
    ]
    if apps >= 1000:
        rows += [
            ("all apps running, as `appctl status` shows it, in at most a quarter of "
             "supervisord's time", app["start_status_s"] <= sup["start_status_s"] / 4,
             "%.2f of it" % ratio("start_status_s")),
            ("`appctl status` under 5 ms", app["status_ms"] < 5, "%.1f ms" % app["status_ms"]),
            ("`/metrics` under 30 ms", app["metrics_ms"] < 30, "%.1f ms" % app["metrics_ms"]),
            ("`appctl update` with one changed file under 20 ms", app["update_ms"] < 20,
             "%.1f ms" % app["update_ms"]),
            ("daemon RSS under 12 MiB", app["rss_mib"] < 12, "%.1f MiB" % app["rss_mib"]),
        ]
    else:
        rows += [
            ("all apps running, as `appctl status` shows it, in at most a third of "
             "supervisord's time", app["start_status_s"] <= sup["start_status_s"] / 3,
             "%.2f of it" % ratio("start_status_s")),
        ]
    rows += [
        ("all apps stopped in under a second", app["stop_s"] < 1.0, "%.2f s" % app["stop_s"]),
        ("a crash of an app up for over 10 s respawned within 5 ms", app["respawn_ms"] <= 5.0,
         "%.1f ms" % app["respawn_ms"]),
        ("200 MiB captured with at most a quarter of supervisord's CPU, no line lost",
         app["capture_cpu_s"] <= sup["capture_cpu_s"] / 4 and lossless,
         "%.2f of it" % ratio("capture_cpu_s")),
    ]
    return rows


def section(apps, runs, names, results, loads):
    """The markdown section of one number of apps."""
    header = "| metric (median of %d runs, %d apps) | %s |%s" % (
        runs, apps, " | ".join(names),
        " ratio appvisord / supervisord |" if len(names) == 2 else "")
    lines = [header, "|" + " --- |" * (len(names) + 1 + (len(names) == 2))]
    med = {n: {key: median(r[key] for r in results[n]) for key, _, _ in ROWS} for n in names}
    for key, label, fmt in ROWS:
        meds = [med[n][key] for n in names]
        cells = ["-" if m is None else fmt % m for m in meds]
        ratio = ""
        if len(names) == 2:
            ratio = " %.2f |" % (meds[1] / meds[0]) if meds[0] and meds[1] is not None else " - |"
        lines.append("| %s | %s |%s" % (label, " | ".join(cells), ratio))
    lossless = ["%s: %s" % (n, "; ".join(sorted({str(r["capture_lines"]) for r in results[n]})))
                for n in names]
    out = "\n".join(lines)
    out += "\n\nLines captured (every numbered line present once, in order): %s." % ", ".join(lossless)
    out += ("\n\nRuns alternate the two daemons; the 1-minute load average at each run's "
            "start ranged from %.1f to %.1f (2 CPUs shared with other work)." % (min(loads), max(loads)))
    if len(names) == 2:
        # Run i of one daemon ran beside run i of the other: their ratios
        # show how much of the median ratio is the host's noise.
        paired = [a["start_status_s"] / s["start_status_s"]
                  for s, a in zip(results[names[0]], results[names[1]])]
        out += ("\n\nThe start-up ratio run by run (each appvisord run over the supervisord run "
                "beside it, as the status command shows it): %s." % ", ".join(
                    "%.2f" % r for r in paired))
        rows = targets(apps, med["supervisord"], med["appvisord"], results)
        out += "\n\n" + "\n".join(
            ["| design target | result | met |", "| --- | --- | --- |"]
            + ["| %s | %s | %s |" % (t, r, "yes" if ok else "no") for t, ok, r in rows])
    return out


INTRO = (
    "# Benchmarks: appvisord and supervisord\n\n"
    "Written by `bench/compare.sh` (appvisord as the README's Install section builds it: "
    "static, musl, release). Same workload for both: APPS `sleep` apps as one "
    "unprivileged user, then one app writing 200 MiB of numbered 64-byte lines; "
    "`APPS=1000 bench/compare.sh` writes the 1,000-app section and keeps the others. "
    "See `bench/compare.py` for how each number is measured.\n\n"
    "appvisord does more per app than supervisord: each spawn gets its own "
    "cgroup, mount, IPC and UTS namespaces with a private /tmp, a session keyring, "
    "Landlock rules and dropped capabilities, all inside the start and respawn times "
    "below. Respawns clone the exec helper straight into its cgroup "
    "(`clone3(CLONE_INTO_CGROUP)`); the daemon's own log shows about 2.5 ms "
    "from the exit to the app's new program running, the rest of the "
    "respawn number is the SIGKILL and the poll. Most of appvisord's RSS is "
    "its own code mapped from disk (file-backed pages, shared with the page "
    "cache); the private row shows the rest. The static build maps no "
    "libc.so, libm or ld.so: the glibc build of the same code has about "
    "2.5 MiB more RSS.\n\n"
    "Each app's session keyring is charged to its user, whose quota is "
    "`kernel.keys.maxkeys` (200 by default): compare.sh raises it for a run with "
    "more apps than that, as a host running that many apps as one user must.\n\n"
    "The harness keeps its own cost off the daemon it times: the start poll "
    "looks only at the pids handed out since its last poll and reads the command "
    "lines only of children it has not matched yet, the "
    "respawn poll only the pids handed out since the kill, and each run's "
    "directory is emptied after it but removed only after the last run (on "
    "this host's ext4, without a journal, each new inode is found by scanning "
    "past those freed in the last minutes, so removing thousands of files "
    "slowed the next run's start, whichever daemon it was); the next compare.sh "
    "waits out those minutes after the previous one's removal.\n"
)


def write_section(path, apps, body):
    """Replaces (or adds) the section of `apps` apps in `path`, keeping the
    other sections and everything from "## Restart and reload latency" on."""
    title = "## %s apps" % format(apps, ",")
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    at = old.find("\n## Restart and reload latency")
    kept_tail = old[at:] if at >= 0 else ""
    head = old[:at] if at >= 0 else old
    sections = {}
    for chunk in head.split("\n## ")[1:]:
        name = "## " + chunk.split("\n", 1)[0]
        if name.endswith(" apps"):
            sections[name] = "## " + chunk.rstrip("\n")
    commit = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    sections[title] = "%s\n\nMeasured %s, %d CPUs, appvisord %s (%s) of %s.\n\n%s" % (
        title, time.strftime("%Y-%m-%d"), os.cpu_count(), os.path.join(BIN, "appvisord"),
        build_kind(os.path.join(BIN, "appvisord")), commit, body)
    order = sorted(sections, key=lambda t: int(t[3:].split()[0].replace(",", "")))
    with open(path, "w") as f:
        f.write(INTRO + "\n" + "\n\n".join(sections[t] for t in order) + "\n" + kept_tail)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", "3")))
    parser.add_argument("--apps", type=int, default=int(os.environ.get("APPS", "100")))
    parser.add_argument("--only", choices=["supervisord", "appvisord"])
    parser.add_argument("--out")
    args = parser.parse_args()
    pwd.getpwnam(USER)
    kinds = [k for k in (Supervisord, Appvisord) if args.only in (None, k.name)]
    results = {k.name: [] for k in kinds}
    loads = []
    wait_after_cleanup()
    # Alternating, so load from elsewhere on the machine falls on both.
    try:
        for i in range(args.runs):
            for kind in kinds:
                load = os.getloadavg()[0]
                loads.append(load)
                log("==> %s run %d/%d (%d apps, load %.1f)" % (kind.name, i + 1, args.runs, args.apps, load))
                r = one_run(kind, args.apps)
                log("    " + ", ".join("%s=%s" % (k, (v if isinstance(v, str) or v is None else round(v, 3)))
                                       for k, v in r.items()))
                results[kind.name].append(r)
    finally:
        for root in LEFT:
            shutil.rmtree(root, ignore_errors=True)
        if LEFT:
            with open(CLEANED, "w") as f:
                f.write("%f\n" % time.time())
    names = [k.name for k in kinds]
    body = section(args.apps, args.runs, names, results, loads)
    print("\n" + body)
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        write_section(args.out, args.apps, body)
        log("wrote " + args.out)


if __name__ == "__main__":
    sys.exit(main())
