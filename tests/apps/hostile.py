"""Hostile WSGI test app: one endpoint per attack on its sandbox.

Run as: gunicorn --bind 127.0.0.1:PORT hostile:application

Every endpoint answers "ok ..." when the attack worked and "err ERRNO"
(e.g. "err EACCES") when the kernel refused it, so a test asserts the
exact errno.
"""

import errno
import os
import socket
import subprocess
import time
from urllib.parse import parse_qs


def _err(e):
    return "err %s" % errno.errorcode.get(e.errno, str(e.errno))


def _read(q):
    with open(q["path"], "rb") as f:
        f.read(1)
    return "ok"


def _list(q):
    return "ok %d" % len(os.listdir(q["path"]))


def _write(q):
    with open(q["path"], "w") as f:
        f.write("pwned\n")
    return "ok"


def _bind(q):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(q["port"])))
    finally:
        s.close()
    return "ok"


def _connect(q):
    s = socket.create_connection(("127.0.0.1", int(q["port"])), timeout=5)
    s.close()
    return "ok"


def _kill(q):
    os.kill(int(q["pid"]), int(q.get("sig", "0")))
    return "ok"


def _exec(q):
    out = subprocess.run([q["path"]], capture_output=True, timeout=10)
    return "ok %s" % out.stdout.decode().strip()


def _fork(q):
    """Forks children that sleep until the first failure, then reaps them."""
    children = []
    result = "ok never refused"
    try:
        for _ in range(int(q.get("max", "1000"))):
            pid = os.fork()
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            children.append(pid)
    except OSError as e:
        result = "%s after %d" % (_err(e), len(children))
    for pid in children:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    return result


ATTACKS = {
    "/read": _read,
    "/list": _list,
    "/write": _write,
    "/bind": _bind,
    "/connect": _connect,
    "/kill": _kill,
    "/exec": _exec,
    "/fork": _fork,
}


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/health":
        body = "ok"
    elif path == "/pid":
        body = "%d" % os.getpid()
    elif path in ATTACKS:
        try:
            body = ATTACKS[path](query)
        except OSError as e:
            body = _err(e)
    else:
        body = "not found"
    data = (body + "\n").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
