"""Output capture cost of two appvisord builds, side by side.

    sudo python3 bench/capture.py --old DIR --new DIR [--runs 7] [--mib 400]

DIR holds an appvisord (and appctl) build, e.g. one of main and one of a
branch. Each run starts a daemon with one app (tests/apps/flood.py as the
user avt-bench) that writes MIB MiB of numbered 64-byte lines to stdout,
and measures the daemon's CPU (utime + stime of all its threads) from the
start of the flood until its last line is in the log file; every line must
be there once, in order. Runs alternate old, new, old, ... so load from
elsewhere on the machine falls on both alike. Prints each run and the
medians in ms of daemon CPU per MiB captured.

Larger floods than compare.py's 200 MiB: CPU time is counted in ticks
(10 ms), and the difference between two builds is a fraction of it.
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import compare  # noqa: E402


def one_run(bin_dir, mib):
    root = benchlib.bench_root("avc-")
    benchlib.copy_flood(root)
    d = compare.Appvisord(root, 0, bin_dir)
    # Room for the whole flood, so every line can be checked.
    keep = mib // 50 + 2
    with open(os.path.join(root, "apps.d", "flood.toml"), "w") as f:
        f.write(
            'user = "%s"\ncommand = ["/usr/bin/python3", "%s/flood.py", "%d"]\n'
            'directory = "%s"\nautostart = false\n[sandbox]\nread_only = ["%s"]\n'
            '[logs]\nmax_size = "50MiB"\nkeep = %d\n' % (compare.USER, root, mib, root, root, keep)
        )
    with benchlib.started(d, timeout=60) as proc:
        compare.wait_for("the daemon to know the app",
                         lambda: "flood" in d.ctl("status", "--json").stdout, timeout=30)
        total = mib * 1024 * 1024 // 64
        cpu0 = compare.cpu_secs(proc.pid)
        s = time.monotonic()
        d.start_flood()
        compare.wait_captured(d, total, "%d MiB captured" % mib, timeout=600)
        cpu = compare.cpu_secs(proc.pid) - cpu0
        wall = time.monotonic() - s
        problem = compare.check_lines(d.flood_files(), total)
        if problem:
            raise SystemExit("lines lost with %s: %s" % (bin_dir, problem))
    return cpu, wall


def main():
    parser = benchlib.builds_parser(__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--mib", type=int, default=400)
    args = parser.parse_args()
    benchlib.ensure_user()
    res = {"old": [], "new": []}
    for i, which, bin_dir in benchlib.alternate(args, args.runs):
        cpu, wall = one_run(bin_dir, args.mib)
        res[which].append(cpu)
        compare.log("run %d %s: cpu %.2f s (%.2f ms/MiB), wall %.2f s, load %s" % (
            i + 1, which, cpu, cpu * 1000 / args.mib, wall,
            open("/proc/loadavg").read().split()[0]))
    med = {k: statistics.median(v) * 1000 / args.mib for k, v in res.items()}
    compare.log("median daemon CPU per MiB captured (%d runs, %d MiB): old %.2f ms, new %.2f ms, "
                "new/old %.2f" % (args.runs, args.mib, med["old"], med["new"], med["new"] / med["old"]))


if __name__ == "__main__":
    sys.exit(main())
