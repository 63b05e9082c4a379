"""Plain WSGI test app: no framework, standard library only.

Run as: gunicorn --bind 127.0.0.1:PORT wsgi_app:application
"""

import json
import os
import pwd
import sys
import time
import urllib.parse

_delay = float(os.environ.get("WSGI_IMPORT_DELAY", "0"))
if _delay > 0:
    # With --preload the arbiter imports this before binding, so READY=1
    # comes this much later.
    time.sleep(_delay)


def _user():
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return "#%d" % os.getuid()


def _reply(start_response, status, body, content_type="text/plain; charset=utf-8"):
    data = body.encode("utf-8")
    start_response(
        status,
        [("Content-Type", content_type), ("Content-Length", str(len(data)))],
    )
    return [data]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        return _reply(start_response, "200 OK", "hello from %s\n" % _user())
    if path == "/health":
        return _reply(start_response, "200 OK", "ok\n")
    if path == "/env":
        return _reply(
            start_response,
            "200 OK",
            json.dumps(dict(os.environ), sort_keys=True),
            "application/json",
        )
    if path == "/pid":
        return _reply(start_response, "200 OK", "%d\n" % os.getpid())
    if path == "/say":
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        stream = sys.stderr if query.get("stream") == ["err"] else sys.stdout
        stream.write(query.get("text", [""])[0] + "\n")
        stream.flush()
        return _reply(start_response, "200 OK", "said\n")
    return _reply(start_response, "404 Not Found", "not found\n")
