"""Hostile or awkward output, one mode at a time, then sleeps.

noisy.py noline MIB        MIB MiB of "x" without a newline on stdout
noisy.py longlines MIB KIB MIB MiB of KIB-KiB lines on stdout
noisy.py ticker MS [BYTES] "tick N" on stdout every MS milliseconds, forever,
                           padded with x to BYTES bytes
noisy.py escapes           terminal escape sequences on stdout and in STATUS=
noisy.py notify-flood SECS READY=1, then garbage datagrams on NOTIFY_SOCKET
                           for SECS seconds as fast as it can

Each finite mode then writes "noisy done" on stderr, so a test knows the
output is all written.
"""

import os
import socket
import sys
import time

MIB = 1024 * 1024

# What an app can do to a terminal showing its output or its STATUS=: set
# the clipboard (OSC 52), move the cursor up and erase a line, return the
# carriage and print a forged row, set the window title.
ESCAPES = (
    "\x1b]52;c;cHduZWQ=\x07"
    "\x1b[1A\x1b[2K"
    "\rother  running  1  1s  0  forged row"
    "\x1b]0;pwned\x07"
)


def notify(message):
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.sendto(message, path)
    finally:
        sock.close()


def done():
    sys.stderr.write("noisy done\n")
    sys.stderr.flush()


def sleep_forever():
    while True:
        time.sleep(3600)


def noline(mib):
    block = b"x" * MIB
    for _ in range(int(mib)):
        sys.stdout.buffer.write(block)
    sys.stdout.buffer.flush()


def longlines(mib, kib):
    line = b"y" * (int(kib) * 1024 - 1) + b"\n"
    total = int(mib) * MIB
    written = 0
    while written < total:
        sys.stdout.buffer.write(line)
        written += len(line)
    sys.stdout.buffer.flush()


def ticker(ms, size="0"):
    n = 0
    while True:
        n += 1
        line = "tick %d " % n
        print(line + "x" * max(0, int(size) - len(line) - 1), flush=True)
        time.sleep(int(ms) / 1000.0)


def escapes():
    print("before " + ESCAPES + " after", flush=True)
    notify(("READY=1\nSTATUS=" + ESCAPES).encode())


def notify_flood(secs):
    notify(b"READY=1")
    path = os.environ["NOTIFY_SOCKET"]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    garbage = b"\xff\xfe not UTF-8 \x80" * 8
    end = time.monotonic() + float(secs)
    while time.monotonic() < end:
        try:
            sock.sendto(garbage, path)
        except BlockingIOError:
            time.sleep(0.0005)


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "ticker":
        ticker(*args)
        return
    {
        "noline": noline,
        "longlines": longlines,
        "escapes": escapes,
        "notify-flood": notify_flood,
    }[mode](*args)
    done()
    sleep_forever()


if __name__ == "__main__":
    main()
