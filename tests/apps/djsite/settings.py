"""Settings of the Django test project: no database, no apps, no
middleware; just URLs. Imports `release` first, like the Flask app."""

import release  # noqa: F401  (first: a broken release fails here)

SECRET_KEY = "appvisor-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {}
ROOT_URLCONF = "djsite.urls"
USE_TZ = True
