"""Security headers Django 5.2 does not set itself (Content-Security-Policy, Permissions-Policy), and a
limit on the size of a request.

Django's SecurityMiddleware and XFrameOptionsMiddleware already send ``X-Content-Type-Options``,
``Referrer-Policy``, ``Cross-Origin-Opener-Policy`` and ``X-Frame-Options`` (see settings). This
middleware adds the two missing ones to every response, and guards uploaded media: whatever is
served under ``MEDIA_URL`` must be an image, is sandboxed by its own CSP and never rendered as a page.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound, JsonResponse
from django.shortcuts import render

# Only these types may come out of the media folder (all derivatives are re-encoded JPEG/PNG/WebP).
MEDIA_CONTENT_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif")
# An uploaded file shown on its own is a bare image: no scripts, no plugins, no same-origin powers.
# (Inline style only for the browser's own image viewer page, which centres the picture with it.)
MEDIA_POLICY = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"


def content_security_policy(directives: dict[str, list[str]], *, media_url: str) -> str:
    """The policy as a header value; an absolute MEDIA_URL (object storage, CDN) is allowed for images."""
    directives = {name: list(sources) for name, sources in directives.items()}
    parts = urlsplit(media_url)
    if parts.scheme and parts.netloc and "img-src" in directives:
        directives["img-src"].append(f"{parts.scheme}://{parts.netloc}")
    return "; ".join(" ".join([name, *sources]) for name, sources in directives.items())


class SecurityHeadersMiddleware:
    """Adds Content-Security-Policy and Permissions-Policy; keeps media responses image-only.

    The policy comes from ``OBVERSE_CONTENT_SECURITY_POLICY`` (a dict of directive → sources) and
    ``OBVERSE_PERMISSIONS_POLICY``; both are computed once, at start-up. A header a view set itself
    is left alone, so one page may loosen or tighten its own policy deliberately.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.csp = content_security_policy(settings.OBVERSE_CONTENT_SECURITY_POLICY, media_url=settings.MEDIA_URL)
        self.permissions_policy = settings.OBVERSE_PERMISSIONS_POLICY
        media_url = settings.MEDIA_URL or ""
        # Only a same-origin media prefix can reach Django at all.
        self.media_prefix = media_url if media_url.startswith("/") and media_url != "/" else None

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if self.media_prefix and request.path.startswith(self.media_prefix):
            response = self._media(response)
        response.headers.setdefault("Content-Security-Policy", self.csp)
        if self.permissions_policy:
            response.headers.setdefault("Permissions-Policy", self.permissions_policy)
        return response

    def _media(self, response: HttpResponse) -> HttpResponse:
        if response.status_code != 200:
            return response
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type not in MEDIA_CONTENT_TYPES:
            # Something other than an image in the media folder is never served: not as a page,
            # not as a download; the images themselves are all this folder is for.
            response.close()  # releases the file a FileResponse holds open
            return HttpResponseNotFound("Not found.", content_type="text/plain")
        response.headers["Content-Security-Policy"] = MEDIA_POLICY
        response.headers["Content-Disposition"] = "inline"
        return response


class RequestSizeLimitMiddleware:
    """Refuse a request whose body is larger than ``OBVERSE_MAX_REQUEST_BYTES`` with 413, unread.

    Django checks each uploaded file's size only after it has received the whole body (and spooled
    the files to the temporary folder), so a 2 GB "photo" would be written to disk before being
    refused. The declared Content-Length is checked first instead; Django reads no more than that.
    API clients get the API's error shape, people a page that says what to do.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.limit = settings.OBVERSE_MAX_REQUEST_BYTES

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django itself treats an unreadable length as no body
        if length <= self.limit:
            return self.get_response(request)
        megabytes = self.limit // (1024 * 1024)
        message = f"The upload is too large: at most {megabytes} MB in one request (two photos)."
        if request.path.startswith("/api/"):
            return JsonResponse({"errors": {"images": [message]}}, status=413)
        return render(request, "413.html", {"message": message}, status=413)
