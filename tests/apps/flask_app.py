"""Flask test app for the real-server matrix (tests/src/servers.rs).

Run as: gunicorn flask_app:app, or uwsgi --module flask_app:app. Imports
`release` (written per release by the harness) first, so a broken release
fails at import and a crashing one starts its timer.
"""

import os
import pwd
import time

import release  # noqa: F401  (first: a broken release fails here)
from flask import Flask, Response, request

app = Flask(__name__)


def _user():
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return "#%d" % os.getuid()


@app.get("/")
def index():
    return "hello from %s, flask, release %s\n" % (_user(), release.RELEASE)


@app.get("/health")
def health():
    return "ok\n"


@app.get("/release")
def which_release():
    return "%s\n" % release.RELEASE


@app.get("/pid")
def pid():
    return "%d\n" % os.getpid()


@app.get("/slow")
def slow():
    """`start` at once, `end` after `secs` seconds: a client that has read
    `start` knows its request is in flight."""
    secs = float(request.args.get("secs", "2"))

    def body():
        yield "start %d\n" % os.getpid()
        time.sleep(secs)
        yield "end\n"

    return Response(body(), mimetype="text/plain")
