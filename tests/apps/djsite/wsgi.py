"""WSGI entry point of the Django test project, as `startproject` writes it.

Run as: gunicorn djsite.wsgi:application, or uwsgi --module djsite.wsgi.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djsite.settings")

application = get_wsgi_application()
