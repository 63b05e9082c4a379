"""Hostile WSGI test app: one endpoint per attack on its sandbox.

Run as: gunicorn --bind 127.0.0.1:PORT hostile:application

Every endpoint answers "ok ..." when the attack worked and "err ERRNO"
(e.g. "err EACCES") when the kernel refused it, so a test asserts the
exact errno.
"""

import ctypes
import errno
import os
import pwd
import socket
import subprocess
import time
from urllib.parse import parse_qs

_libc = ctypes.CDLL(None, use_errno=True)

# x86-64 syscall numbers, and the arguments that make each one an attack.
SYSCALLS = {
    "io_uring_setup": (425, [1, 0]),
    "bpf": (321, [0, 0, 0]),
    "unshare": (272, [0x10000000]),  # CLONE_NEWUSER
    "ptrace": (101, [16, 1, 0, 0]),  # PTRACE_ATTACH to pid 1
}

KEYCTL_GET_KEYRING_ID = 0
KEYCTL_SEARCH = 10
KEY_SPEC_SESSION_KEYRING = -3

# Sockets kept open between requests (one worker per app in the tests).
_kept = []


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


def _syscall(nr, *args):
    rc = _libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if rc < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return rc


def _sys(q):
    """A syscall the seccomp filter refuses."""
    nr, args = SYSCALLS[q["name"]]
    return "ok %d" % _syscall(nr, *args)


def _socket(q):
    """A socket of any family, e.g. 16 (AF_NETLINK), 38 (AF_ALG)."""
    s = socket.socket(int(q["family"]), int(q.get("type", socket.SOCK_RAW)), 0)
    s.close()
    return "ok"


def _keyring(q):
    """The session keyring's serial."""
    return "ok %d" % _syscall(250, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)


def _key_add(q):
    rc = _libc.syscall(
        ctypes.c_long(248),
        b"user",
        q["name"].encode(),
        b"secret",
        ctypes.c_size_t(6),
        ctypes.c_long(KEY_SPEC_SESSION_KEYRING),
    )
    if rc < 0:
        raise OSError(ctypes.get_errno(), "add_key")
    return "ok %d" % rc


def _key_find(q):
    rc = _libc.syscall(
        ctypes.c_long(250),
        ctypes.c_long(KEYCTL_SEARCH),
        ctypes.c_long(KEY_SPEC_SESSION_KEYRING),
        b"user",
        q["name"].encode(),
        ctypes.c_long(0),
    )
    if rc < 0:
        raise OSError(ctypes.get_errno(), "keyctl search")
    return "ok %d" % rc


def _abstract_listen(q):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind("\0" + q["name"])
    s.listen(1)
    _kept.append(s)
    return "ok"


def _abstract_connect(q):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("\0" + q["name"])
    finally:
        s.close()
    return "ok"


def _user(q):
    """Looks a user up by name (None: the app's own uid) in /etc/passwd."""
    if "name" in q:
        return "ok %d" % pwd.getpwnam(q["name"]).pw_uid
    return "ok %s" % pwd.getpwuid(os.getuid()).pw_name


def _host(q):
    infos = socket.getaddrinfo(q["name"], 80, socket.AF_INET, socket.SOCK_STREAM)
    return "ok %s" % infos[0][4][0]


def _proc(q):
    """What this process (a gunicorn worker) sees of /proc: its own status,
    and the uids of every process listed."""
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    uids = set()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pids.append(int(name))
        try:
            with open("/proc/%s/status" % name) as f:
                for line in f:
                    if line.startswith("Uid:"):
                        uids.add(int(line.split()[1]))
        except OSError:
            pass
    return "ok pid=%d name=%s uids=%s pids=%s" % (
        os.getpid(),
        status["Name"].strip(),
        ",".join(str(u) for u in sorted(uids)),
        ",".join(str(p) for p in sorted(pids)),
    )


ATTACKS = {
    "/sys": _sys,
    "/socket": _socket,
    "/keyring": _keyring,
    "/key_add": _key_add,
    "/key_find": _key_find,
    "/abstract_listen": _abstract_listen,
    "/abstract_connect": _abstract_connect,
    "/user": _user,
    "/host": _host,
    "/proc": _proc,
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
        except KeyError as e:
            body = "err KeyError %s" % e
        except OSError as e:
            body = _err(e)
    else:
        body = "not found"
    data = (body + "\n").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
