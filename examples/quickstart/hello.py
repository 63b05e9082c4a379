"""The quickstart's app: plain WSGI, no framework."""

import os
import pwd


def application(environ, start_response):
    user = pwd.getpwuid(os.getuid()).pw_name
    body = ("hello from %s (pid %d)\n" % (user, os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
