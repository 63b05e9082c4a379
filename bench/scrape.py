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

import os
import resource
import shutil
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import compare  # noqa: E402


def get_apps(d):
    """`GET /v1/apps` over the control socket: the raw answer, head and body."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(d.sock)
        s.sendall(b"GET /v1/apps HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        chunks = []
        while True:
            data = s.recv(1 << 16)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


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
    parser = benchlib.builds_parser(__doc__)
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--only", choices=("metrics", "status"),
                        help="measure only `/metrics` or only status")
    args = parser.parse_args()
    benchlib.ensure_user()
    # Both daemons' apps run as the one user.
    with benchlib.raised_maxkeys(2 * args.apps + 100):
        run(args)


def run(args):
    daemons, procs = {}, {}
    try:
        for tag, bin_dir in benchlib.builds(args):
            root = benchlib.bench_root("avs-")
            d = compare.Appvisord(root, args.apps, bin_dir, cgroup="avs-%s" % tag)
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
                wall, cpu = measure(p, lambda: get_apps(d))
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
            answer = get_apps(d)
            print("%s: GET /v1/apps answers %d bytes (head and body)" % (tag, len(answer)))
        for tag, d in daemons.items():
            if args.only == "status":
                continue
            text = d.metrics_text()
            mem = [l for l in text.splitlines() if l.startswith('appvisor_app_memory_bytes{app="app1"}')]
            print("%s: %s, %d bytes of metrics" % (tag, mem, len(text)))
    finally:
        # Both asked at once, then waited for: they stop side by side.
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            benchlib.stop(p, timeout=120)
        for d in daemons.values():
            shutil.rmtree(d.root, ignore_errors=True)


if __name__ == "__main__":
    main()
