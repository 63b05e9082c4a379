"""Floods stdout with numbered lines, then sleeps.

flood.py MIB writes MIB MiB of 64-byte lines "line 000000001 xxx...\n",
numbered from 1, as fast as it can, then "flood done N" (N = the number of
numbered lines), then sleeps, so a test can check that every line landed
exactly once and in order.
"""

import sys
import time

LINE = 64
CHUNK = 4096  # lines per write


def main():
    mib = float(sys.argv[1]) if len(sys.argv) > 1 else 50.0
    total = int(mib * 1024 * 1024) // LINE
    pad = "x" * (LINE - len("line 000000000 ") - 1)
    out = sys.stdout.buffer
    n = 1
    while n <= total:
        end = min(n + CHUNK, total + 1)
        out.write("".join("line %09d %s\n" % (i, pad) for i in range(n, end)).encode())
        n = end
    out.write(b"flood done %d\n" % total)
    out.flush()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
