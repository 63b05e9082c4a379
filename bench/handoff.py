"""Hand-off time with 100 apps: from SIGUSR2 until the new daemon answers.

One appvisord (--bin, default APPVISOR_BIN_DIR) with APPS `sleep` apps as
the user avt-bench (compare.py's workload). Once all run, RUNS times:
send SIGUSR2 and poll `GET /v1/daemon` on the control socket (raw HTTP,
1 ms apart) until it reports a hand-off with a new id and no error; that
is one hand-off time. Each app must keep its pid across all runs. Prints
the median and, with --out, writes the "Hand-off" section of that file
(docs/benchmarks.md), replacing it if there.

--phases runs the daemon with APPVISOR_LOG=debug and prints, instead, the
median time of each phase the daemon logs ("hand-off: PHASE ms=N": from
the request in the old image, from the freeze in the new one); debug
logging costs time itself, so those runs are not the benchmark's.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import sys
import time

from benchlib import bench_root, recv_all
from compare import Appvisord, build_kind, log, wait_for

SECTION = "## Hand-off"
TARGET_MS = 100.0


def daemon_status(sock_path):
    """`GET /v1/daemon` as JSON, or None while nobody answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(sock_path)
            s.sendall(b"GET /v1/daemon HTTP/1.0\r\nHost: x\r\n\r\n")
            data = recv_all(s)
        head, _, body = data.partition(b"\r\n\r\n")
        if head.split(None, 2)[1:2] != [b"200"]:
            return None
        return json.loads(body)
    except (OSError, ValueError):
        return None


def pids(d):
    out = d.ctl("status", "--json").stdout
    return {a["name"]: a["pid"] for a in json.loads(out)["apps"] if a["name"].startswith("app")}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--out")
    parser.add_argument("--phases", action="store_true",
                        help="log at debug and print each phase's median instead")
    args = parser.parse_args()

    import compare
    root = bench_root("avh-")
    d = Appvisord(root, args.apps)
    os.remove(os.path.join(root, "apps.d", "flood.toml"))
    proc = d.start("debug" if args.phases else None)
    times, unsupervised = [], []
    phases = {}
    try:
        wait_for("%d apps running" % args.apps, lambda: d.running() == args.apps, interval=0.05)
        before = pids(d)
        last = None
        for run in range(args.runs):
            t0 = time.monotonic()
            os.kill(proc.pid, signal.SIGUSR2)
            while True:
                status = daemon_status(d.sock)
                handoff = status and status.get("handoff")
                if handoff and handoff["id"] != last:
                    break
                if time.monotonic() - t0 > 30:
                    sys.exit("no hand-off reported within 30 s")
                time.sleep(0.001)
            times.append((time.monotonic() - t0) * 1000.0)
            if handoff["error"]:
                sys.exit("hand-off %d failed: %s" % (run, handoff["error"]))
            unsupervised.append(handoff["unsupervised_ms"])
            last = handoff["id"]
            log("hand-off %d: %.1f ms (apps unsupervised %d ms)" % (run, times[-1], unsupervised[-1]))
            time.sleep(0.2)
        after = pids(d)
        if after != before:
            sys.exit("apps changed pids across the hand-offs")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        with open(os.path.join(root, "daemon.log")) as f:
            for line in f:
                m = re.search(r"hand-off: (.+?) ms=([0-9.]+)", line)
                if m:
                    phases.setdefault(m.group(1), []).append(float(m.group(2)))
        shutil.rmtree(root, ignore_errors=True)

    if args.phases:
        print("phase (ms since the request, old image; since the freeze, new image): median of %d"
              % args.runs)
        for phase, ms in phases.items():
            print("  %-32s %7.1f" % (phase, statistics.median(ms)))
        print("signal to answer: median %.1f ms" % statistics.median(times))
        return

    median = statistics.median(times)
    binary = os.path.join(compare.BIN, "appvisord")
    text = (
        "%s\n\nWritten by `bench/handoff.py` (%s, %d CPUs, appvisord %s): %d `sleep` apps "
        "(compare.py's workload), %d hand-offs by SIGUSR2 in a row, each timed from the "
        "signal until `GET /v1/daemon` on the control socket answers from the new image "
        "with the hand-off's report. Every app kept its pid.\n\n"
        "| metric (%d apps) | median | fastest | slowest | target | met |\n"
        "| --- | --- | --- | --- | --- | --- |\n"
        "| SIGUSR2 to the new daemon answering (ms) | %.1f | %.1f | %.1f | < %d | %s |\n"
        "| apps unsupervised, as the daemon reports it (ms) | %d | %d | %d | | |\n"
        % (SECTION, time.strftime("%Y-%m-%d"), os.cpu_count(), build_kind(binary),
           args.apps, args.runs, args.apps, median, min(times), max(times), TARGET_MS,
           "yes" if median < TARGET_MS else "no",
           statistics.median(unsupervised), min(unsupervised), max(unsupervised))
    )
    print(text)
    if args.out:
        with open(args.out) as f:
            doc = f.read()
        if SECTION in doc:
            start = doc.index(SECTION)
            end = doc.find("\n## ", start + 1)
            doc = doc[:start] + text + ("" if end < 0 else doc[end:])
        else:
            doc = doc.rstrip("\n") + "\n\n" + text
        with open(args.out, "w") as f:
            f.write(doc)


if __name__ == "__main__":
    main()
