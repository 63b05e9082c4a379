"""Start-up and respawn of appvisord, two builds side by side.

Two builds of appvisord and appctl (--bin, and --baseline, e.g. a worktree
of an older commit built the same way), the same workload as compare.py's
(APPS `sleep` apps of the user avt-bench, start_secs 0). RUNS rounds; in
each, both builds one after the other, in alternating order so the
machine's load falls on both alike:

- start: from exec of the daemon until every app's program runs (polling
  the daemon's children), and until `appctl status --json` says so;
- daemon CPU to start them all (utime + stime of the daemon, all threads),
  and of it the crash records' writer thread's;
- helper CPU per app: the on-CPU time of each app's process (schedstat),
  which holds the exec helper's whole life (clone, exec of the helper,
  its steps, exec of `sleep`): a `sleep` itself only starts, so the
  difference between two builds is the helper's;
- minor page faults per app process, the same way;
- respawn: KILLS apps up past the 10 s in which a crash counts as a failed
  start, one at a time: SIGKILL until a new process with its command line
  exists, polled as compare.py does, and that new process's on-CPU time.

Prints medians per build. Needs root, and kernel.keys.maxkeys above APPS
(see compare.sh).
"""

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time

import compare
from compare import BASE_ARG, BENCH_DIR, child_pids, cpu_secs, log, wait_for


def proc_cpu_ns(pid):
    """On-CPU ns of the process's main thread (the helper, then the app)."""
    with open("/proc/%d/schedstat" % pid) as f:
        return int(f.read().split()[0])


def thread_cpu_s(pid, name):
    """CPU (utime + stime) of the process's live threads called `name`."""
    total = 0
    for task in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, task)) as f:
                text = f.read()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        if comm == name:
            fields = text.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / compare.TICKS


def minflt(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace").strip()


def one_run(bin_dir, apps, kills):
    compare.BIN = bin_dir
    os.makedirs(BENCH_DIR, exist_ok=True)
    root = tempfile.mkdtemp(prefix="avs-", dir=BENCH_DIR)
    os.chmod(root, 0o755)
    shutil.copy(compare.FLOOD, os.path.join(root, "flood.py"))
    d = compare.Appvisord(root, apps)
    res = {}
    t0 = time.monotonic()
    proc = d.start()
    try:
        programs = set("/bin/sleep %d" % (BASE_ARG + i) for i in range(apps))

        def all_programs():
            seen = 0
            for kid in child_pids(proc.pid):
                try:
                    seen += cmdline(kid) in programs
                except OSError:
                    pass
            return seen == apps

        wait_for("%d programs" % apps, all_programs, interval=0.002, timeout=600)
        res["start_s"] = time.monotonic() - t0
        wait_for("%d running" % apps, lambda: d.running() == apps, interval=0, timeout=600)
        all_running = time.monotonic()
        res["start_status_s"] = all_running - t0
        res["daemon_cpu_s"] = cpu_secs(proc.pid)
        res["records_cpu_s"] = thread_cpu_s(proc.pid, "crash-records")
        by_cmd = {}
        for kid in child_pids(proc.pid):
            try:
                by_cmd[cmdline(kid)] = kid
            except OSError:
                pass
        kids = [by_cmd[p] for p in programs if p in by_cmd]
        res["app_cpu_ms"] = statistics.median(proc_cpu_ns(k) for k in kids) / 1e6
        res["app_minflt"] = statistics.median(minflt(k) for k in kids)
        time.sleep(max(0.0, compare.STABLE_AFTER_READY_S + 1 - (time.monotonic() - all_running)))
        lat, cpu, faults = [], [], []
        for i in range(kills):
            cmd = "/bin/sleep %d" % (BASE_ARG + i)
            old = by_cmd[cmd]
            known = set(child_pids(proc.pid))
            s = time.monotonic()
            os.kill(old, signal.SIGKILL)
            found = []

            def respawned():
                for pid in set(child_pids(proc.pid)) - known:
                    try:
                        if cmdline(pid) == cmd:
                            found.append(pid)
                            return True
                    except OSError:
                        continue
                return False

            wait_for("respawn of app%d" % i, respawned, timeout=30, interval=0.0002)
            lat.append((time.monotonic() - s) * 1000)
            # The poll may see the new process mid-exec; let it settle.
            time.sleep(0.05)
            cpu.append(proc_cpu_ns(found[0]) / 1e6)
            faults.append(minflt(found[0]))
            time.sleep(0.05)
        res["respawn_ms"] = statistics.median(lat)
        res["respawn_app_cpu_ms"] = statistics.median(cpu)
        res["respawn_minflt"] = statistics.median(faults)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except Exception:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)
    return res


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True, help="directory of appvisord and appctl (after)")
    parser.add_argument("--baseline", required=True, help="the same, of the build before")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--kills", type=int, default=5)
    args = parser.parse_args()
    builds = [("before", args.baseline), ("after", args.bin)]
    results = {name: [] for name, _ in builds}
    for i in range(args.runs):
        order = builds if i % 2 == 0 else builds[::-1]
        for name, path in order:
            log("==> %s run %d/%d (%d apps, load %.1f)" % (name, i + 1, args.runs, args.apps,
                                                          os.getloadavg()[0]))
            r = one_run(path, args.apps, args.kills)
            log("    " + ", ".join("%s=%.3f" % kv for kv in r.items()))
            results[name].append(r)
    keys = list(results["before"][0])
    print("\n| %d apps, median of %d runs | before | after | after / before |" % (args.apps, args.runs))
    print("| --- | --- | --- | --- |")
    for k in keys:
        b = statistics.median(r[k] for r in results["before"])
        a = statistics.median(r[k] for r in results["after"])
        print("| %s | %.3f | %.3f | %.2f |" % (k, b, a, a / b if b else float("nan")))


if __name__ == "__main__":
    sys.exit(main())
