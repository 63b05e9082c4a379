"""appvisord's resident memory with N idle apps, for two builds side by side.

For each build (`--old DIR`, `--new DIR`: directories holding appvisord and
appctl) and each app count (`--apps 100,1000`): compare.py's workload (N
`sleep` apps of one user, start_secs 0), started, waited for until
`appctl status` shows every app running, then left idle for 10 s before
the daemon's VmRSS and RssAnon are read from /proc/PID/status. Runs
alternate the builds. Resident memory is not distorted by load the way
timings are, so few runs suffice; the medians are printed.

    sudo python3 bench/rss.py --old DIR --new DIR [--apps 100,1000] [--runs 2]
        [--output BYTES]

With --output, each app first writes BYTES of 80-byte lines to stdout
(`yes | head -c`), then execs the same `sleep`: what the daemon keeps
for an app that wrote once and went quiet.

Needs root; apps run as the user BENCH_USER (default avt-bench), created
if missing. kernel.keys.maxkeys is raised for the run when the largest
app count needs it, and put back after.
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import compare  # noqa: E402

IDLE_S = 10


def one(bin_dir, apps, output):
    root = benchlib.bench_root("avr-")
    benchlib.copy_flood(root)
    d = compare.Appvisord(root, apps, bin_dir)
    if output:
        # Each app writes `output` bytes of lines to stdout, then sleeps.
        line = "0123456789" * 7 + "012345678"
        for i in range(apps):
            path = os.path.join(root, "apps.d", "app%d.toml" % i)
            with open(path) as f:
                text = f.read()
            text = text.replace(
                'command = ["/bin/sleep", "%d"]' % (compare.BASE_ARG + i),
                'command = ["/bin/sh", "-c", "yes %s | head -c %d; exec /bin/sleep %d"]'
                % (line, output, compare.BASE_ARG + i))
            with open(path, "w") as f:
                f.write(text)
    with benchlib.started(d, timeout=300) as proc:
        compare.wait_for("%d apps running" % apps, lambda: d.running() == apps,
                         interval=0.2, timeout=900)
        time.sleep(IDLE_S)
        rss = compare.proc_field(proc.pid, "VmRSS") / 1024.0
        anon = compare.proc_field(proc.pid, "RssAnon") / 1024.0
    return rss, anon


def main():
    parser = benchlib.builds_parser(__doc__)
    parser.add_argument("--apps", default="100,1000")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--output", type=int, default=0,
                        help="bytes each app writes to stdout before it sleeps")
    args = parser.parse_args()
    counts = [int(n) for n in args.apps.split(",")]
    benchlib.ensure_user()
    results = {}
    with benchlib.raised_maxkeys(max(counts) + 50):
        for apps in counts:
            for run, name, bin_dir in benchlib.alternate(args, args.runs):
                rss, anon = one(bin_dir, apps, args.output)
                compare.log("%s %d apps run %d: VmRSS %.2f MiB, RssAnon %.2f MiB"
                            % (name, apps, run + 1, rss, anon))
                results.setdefault((apps, name), []).append((rss, anon))
    print("\n| apps | build | VmRSS (MiB) | RssAnon (MiB) |\n| --- | --- | --- | --- |")
    for (apps, name), values in sorted(results.items()):
        print("| %d | %s | %.1f | %.1f |" % (
            apps, name, statistics.median(v[0] for v in values),
            statistics.median(v[1] for v in values)))


if __name__ == "__main__":
    sys.exit(main())
