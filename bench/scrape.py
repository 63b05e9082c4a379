"""`/metrics` and `appctl status` of two appvisord builds side by side.

    sudo python3 bench/scrape.py --old DIR --new DIR [--apps 1000] [--samples 12]
                                 [--only metrics|status]

Each DIR holds an `appvisord` and an `appctl` (a static musl release
build, as compare.sh makes). Both daemons run at once, each with APPS
`sleep` apps of the user avt-bench (compare.py's workload and config,
each daemon in its own cgroup), and the requests alternate between them,
old then new, so load from elsewhere on the host falls on both alike.

For each request: its wall time (for `/metrics` the HTTP GET, for status
the whole `appctl status` run, as an operator waits for it) and the CPU
the daemon spent on it, the sum over the daemon's threads of the run
time the scheduler counts in `/proc/PID/task/TID/schedstat`
(nanoseconds, unlike the 10 ms ticks of `/proc/PID/stat`), read just
before and just after. For status also the CPU `appctl` itself took (its
rusage, user and system), and the wall time of the bare request
(`GET /v1/apps` over the socket, read to its end, without `appctl`).
Prints medians, quartiles, the bytes of one `GET /v1/apps` answer and the
memory figure each build reports for one app. Needs root, and `kernel.keys.maxkeys` of
at least twice APPS plus margin (it raises it for the run).
"""

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402


class Daemon(compare.Appvisord):
    def __init__(self, root, apps, bin_dir, tag):
        super().__init__(root, apps)
        self.bin_dir = bin_dir
        self.tag = tag

    def start(self, log_filter=None):
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "NO_COLOR": "1"}
        return subprocess.Popen(
            [os.path.join(self.bin_dir, "appvisord"), "--config", self.conf, "--cgroup",
             "avs-%s-%d" % (self.tag, os.getpid())],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.root, "daemon.log"), "w"),
            env=env,
        )

    def ctl(self, *args):
        return subprocess.run(
            [os.path.join(self.bin_dir, "appctl"), "--socket", self.sock] + list(args),
            capture_output=True, text=True,
        )

    def get_apps(self):
        """`GET /v1/apps` over the control socket: the raw answer, head and body."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.sock)
            s.sendall(b"GET /v1/apps HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            chunks = []
            while True:
                data = s.recv(1 << 16)
                if not data:
                    return b"".join(chunks)
                chunks.append(data)

    def metrics_text(self):
        with urllib.request.urlopen("http://%s/metrics" % self.status_address, timeout=30) as r:
            return r.read().decode()


def cpu_ns(pid):
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def measure(proc, fn):
    c = cpu_ns(proc.pid)
    s = time.monotonic()
    fn()
    wall = time.monotonic() - s
    return wall * 1000, (cpu_ns(proc.pid) - c) / 1e6


def children_cpu_ms():
    """CPU of the children waited for so far, user and system, in ms."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def quartiles(values):
    q = statistics.quantiles(values, n=4)
    return "%.1f (%.1f-%.1f)" % (statistics.median(values), q[0], q[2])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", required=True)
    parser.add_argument("--new", required=True)
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--only", choices=("metrics", "status"),
                        help="measure only `/metrics` or only status")
    args = parser.parse_args()

    os.makedirs(compare.BENCH_DIR, exist_ok=True)
    if subprocess.run(["id", compare.USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", "--user-group", compare.USER], check=True)
    maxkeys_file = "/proc/sys/kernel/keys/maxkeys"
    with open(maxkeys_file) as f:
        maxkeys = int(f.read())
    need = 2 * args.apps + 100
    if maxkeys < need:
        with open(maxkeys_file, "w") as f:
            f.write(str(need))
    import tempfile
    daemons, procs = {}, {}
    try:
        for tag, bin_dir in (("old", args.old), ("new", args.new)):
            root = tempfile.mkdtemp(prefix="avs-", dir=compare.BENCH_DIR)
            os.chmod(root, 0o755)
            d = Daemon(root, args.apps, os.path.abspath(bin_dir), tag)
            daemons[tag] = d
            procs[tag] = d.start()
        for tag, d in daemons.items():
            compare.wait_for("%d apps running under %s" % (args.apps, tag),
                             lambda: d.running() == args.apps, interval=0.2, timeout=900)
            compare.log("%s: %d apps running" % (tag, args.apps))
        # Settle: the first scrape opens what later ones keep.
        for d in daemons.values():
            d.metrics_text()
            d.status()
        load = os.getloadavg()[0]
        keys = ("metrics", "metrics_cpu", "status", "status_cpu", "status_ctl_cpu",
                "get_apps", "get_apps_cpu")
        res = {tag: {key: [] for key in keys} for tag in daemons}
        for _ in range(args.samples):
            if args.only != "status":
                for tag in ("old", "new"):
                    d, p = daemons[tag], procs[tag]
                    wall, cpu = measure(p, d.metrics)
                    res[tag]["metrics"].append(wall)
                    res[tag]["metrics_cpu"].append(cpu)
            if args.only == "metrics":
                continue
            for tag in ("old", "new"):
                d, p = daemons[tag], procs[tag]
                ctl = children_cpu_ms()
                wall, cpu = measure(p, d.status)
                res[tag]["status_ctl_cpu"].append(children_cpu_ms() - ctl)
                res[tag]["status"].append(wall)
                res[tag]["status_cpu"].append(cpu)
            for tag in ("old", "new"):
                d, p = daemons[tag], procs[tag]
                wall, cpu = measure(p, d.get_apps)
                res[tag]["get_apps"].append(wall)
                res[tag]["get_apps_cpu"].append(cpu)
        load_end = os.getloadavg()[0]
        print("%d apps, %d samples each, alternating; 1-minute load %.1f to %.1f"
              % (args.apps, args.samples, load, load_end))
        print("| median (quartiles), ms | old | new |")
        print("| --- | --- | --- |")
        for key, label in (("metrics", "`/metrics`, wall"),
                           ("metrics_cpu", "`/metrics`, daemon CPU"),
                           ("status", "`appctl status`, wall"),
                           ("status_cpu", "`appctl status`, daemon CPU"),
                           ("status_ctl_cpu", "`appctl status`, appctl CPU"),
                           ("get_apps", "`GET /v1/apps` alone, wall"),
                           ("get_apps_cpu", "`GET /v1/apps` alone, daemon CPU")):
            if len(res["old"][key]) < 2:
                continue
            print("| %s | %s | %s |" % (label, quartiles(res["old"][key]),
                                        quartiles(res["new"][key])))
        for tag, d in daemons.items():
            answer = d.get_apps()
            print("%s: GET /v1/apps answers %d bytes (head and body)" % (tag, len(answer)))
        for tag, d in daemons.items():
            if args.only == "status":
                continue
            text = d.metrics_text()
            mem = [l for l in text.splitlines() if l.startswith('appvisor_app_memory_bytes{app="app1"}')]
            print("%s: %s, %d bytes of metrics" % (tag, mem, len(text)))
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
        if maxkeys < need:
            with open(maxkeys_file, "w") as f:
                f.write(str(maxkeys))


if __name__ == "__main__":
    main()
