"""The Django test project's routes, the same as flask_app.py's."""

import os
import pwd
import time

import release
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import path


def _user():
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return "#%d" % os.getuid()


def _text(body):
    return HttpResponse(body, content_type="text/plain; charset=utf-8")


def index(request):
    return _text("hello from %s, django, release %s\n" % (_user(), release.RELEASE))


def health(request):
    return _text("ok\n")


def which_release(request):
    return _text("%s\n" % release.RELEASE)


def pid(request):
    return _text("%d\n" % os.getpid())


def slow(request):
    """`start` at once, `end` after `secs` seconds (see flask_app.py)."""
    secs = float(request.GET.get("secs", "2"))

    def body():
        yield "start %d\n" % os.getpid()
        time.sleep(secs)
        yield "end\n"

    return StreamingHttpResponse(body(), content_type="text/plain")


urlpatterns = [
    path("", index),
    path("health", health),
    path("release", which_release),
    path("pid", pid),
    path("slow", slow),
]
