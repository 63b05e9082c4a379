"""A process that resists stopping, as badly written daemons do.

Ignores SIGTERM; forks a daemonized grandchild (double fork + setsid) that
ignores SIGTERM too and outlives its parent's process tree.

stubborn.py [--no-grandchild] [--exit-after SECS --status N]
"""

import argparse
import os
import signal
import sys
import time


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def sleep_forever():
    while True:
        time.sleep(3600)


def daemonize():
    if os.fork() > 0:
        return
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    say("grandchild pid %d" % os.getpid())
    sleep_forever()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-grandchild", action="store_true")
    parser.add_argument("--exit-after", type=float, default=None)
    parser.add_argument("--status", type=int, default=1)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    say("main pid %d" % os.getpid())
    if not args.no_grandchild:
        daemonize()
        # Reap the intermediate child so it does not linger as a zombie.
        try:
            os.wait()
        except ChildProcessError:
            pass
    if args.exit_after is not None:
        time.sleep(args.exit_after)
        sys.exit(args.status)
    sleep_forever()


if __name__ == "__main__":
    main()
