"""Template context shared by every page."""

from __future__ import annotations

from django.http import HttpRequest

# The product's name on every page. Django's auth views put the request's host in ``site_name``
# (``get_current_site``), over what a context processor gives: config/urls.py passes this to them.
SITE_NAME = "Obverse"


def site(request: HttpRequest) -> dict:
    return {"site_name": SITE_NAME}
