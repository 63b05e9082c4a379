"""Starts, says when, and exits with a chosen status after a chosen time.

crash.py [--after SECS] [--status N] [--trickle LINES]

--trickle writes that many lines to stderr, a fraction of a millisecond
apart, then the last one and exits at once: the daemon's capture of the
output is then usually a little behind the exit.
"""

import argparse
import os
import sys
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--after", type=float, default=0.0)
    parser.add_argument("--status", type=int, default=1)
    parser.add_argument("--trickle", type=int, default=0)
    args = parser.parse_args()
    sys.stdout.write("started at %.6f pid %d\n" % (time.time(), os.getpid()))
    sys.stdout.flush()
    if args.after > 0:
        time.sleep(args.after)
    if args.trickle:
        for i in range(args.trickle):
            os.write(2, b"trickle line %d\n" % i)
            time.sleep(0.0002)
        # The last line, then gone at once, without the interpreter's
        # clean-up: the exit reaches the daemon right behind the line.
        os.write(2, b"crashing with status %d\n" % args.status)
        os._exit(args.status)
    sys.stderr.write("crashing with status %d\n" % args.status)
    sys.exit(args.status)


if __name__ == "__main__":
    main()
