"""Starts processes as fast as the kernel lets it and keeps trying when it
refuses: a fork bomb, as a tasks limit sees one. Each child is `sleep`,
started with posix_spawn (vfork: no copy of this process), so thousands
of them cost little memory and no CPU."""

import os
import time

started = 0
refused = False
while True:
    try:
        os.posix_spawn("/bin/sleep", ["sleep", "3600"], {})
    except BlockingIOError:
        if not refused:
            print("fork refused after %d children" % started, flush=True)
            refused = True
        time.sleep(0.05)
        continue
    started += 1
    if started % 1000 == 0:
        print("started %d" % started, flush=True)
