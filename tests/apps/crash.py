"""Starts, says when, and exits with a chosen status after a chosen time.

crash.py [--after SECS] [--status N]
"""

import argparse
import os
import sys
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--after", type=float, default=0.0)
    parser.add_argument("--status", type=int, default=1)
    args = parser.parse_args()
    sys.stdout.write("started at %.6f pid %d\n" % (time.time(), os.getpid()))
    sys.stdout.flush()
    if args.after > 0:
        time.sleep(args.after)
    sys.stderr.write("crashing with status %d\n" % args.status)
    sys.exit(args.status)


if __name__ == "__main__":
    main()
