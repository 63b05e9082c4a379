"""Tries to read one byte of each path given and prints, per path, one
line "read PATH ok" or "read PATH err ERRNO" (e.g. "err EACCES"), then
"--- probe done", then sleeps.

What a sandbox test asserts from the app's own logs, so the answer comes
from inside the sandbox, as the app's user.
"""

import errno
import sys
import time


def main():
    for path in sys.argv[1:]:
        try:
            with open(path, "rb") as f:
                f.read(1)
            result = "ok"
        except OSError as e:
            result = "err %s" % errno.errorcode.get(e.errno, str(e.errno))
        print("read %s %s" % (path, result), flush=True)
    print("--- probe done", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
