"""Allocates memory until the kernel kills it: for [limits] memory."""

import sys

print("hog allocating", flush=True)
chunks = []
while True:
    # Touch every page, so the memory is really charged.
    chunks.append(bytearray(b"x" * (1 << 20)))
    if len(chunks) % 64 == 0:
        print("hog at %d MiB" % len(chunks), flush=True)
        sys.stdout.flush()
