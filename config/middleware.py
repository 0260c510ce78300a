"""Security headers Django 5.2 does not set itself (Content-Security-Policy, Permissions-Policy), a
limit on the size of a request, and the client's address behind trusted proxies.

Django's SecurityMiddleware and XFrameOptionsMiddleware already send ``X-Content-Type-Options``,
``Referrer-Policy``, ``Cross-Origin-Opener-Policy`` and ``X-Frame-Options`` (see settings). This
middleware adds the two missing ones to every response, and guards uploaded media: whatever is
served under ``MEDIA_URL`` must be an image, is sandboxed by its own CSP and never rendered as a page.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
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


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """``OBVERSE_TRUSTED_PROXIES`` as networks: each entry an address (``10.0.0.5``) or a network (``10.0.0.0/8``)."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as a proxy writes it into X-Forwarded-For (``[v6]:port`` and ``v4:port`` included), or None."""
    text = text.strip().strip('"')
    if text.startswith("["):  # [2001:db8::1]:443
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # 203.0.113.7:51234
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:192.0.2.1 is 192.0.2.1, for the trusted networks too
    return address


def forwarded_client(remote_addr: str, forwarded_for: str, trusted: Sequence[Network]) -> str:
    """The client's address: ``remote_addr``, or, when that is a trusted proxy, the first untrusted hop it reports.

    X-Forwarded-For lists the hops from the client to the last proxy; each proxy appends the address it
    was reached from. Read from the right, every address a trusted proxy added can be believed, up to
    and including the first address that is not itself a trusted proxy: that is the client. Anything
    further left was written by the client and proves nothing. A header from an untrusted peer is
    ignored whole, so nobody can choose the address they are rate-limited and locked out by.
    """
    peer = _address(remote_addr)
    if peer is None or not any(peer in network for network in trusted):
        return remote_addr
    client = peer
    for hop in reversed([part for part in forwarded_for.split(",") if part.strip()]):
        address = _address(hop)
        if address is None:  # garbage from the client's side of the chain: stop at the last good hop
            break
        client = address
        if not any(address in network for network in trusted):
            break
    return str(client)


def client_ip_address(request: HttpRequest) -> str | None:
    """The client's address as every rate limit sees it (``TrustedProxyMiddleware`` has set REMOTE_ADDR).

    django-axes reads it through ``AXES_CLIENT_IP_CALLABLE``, so its lockouts count the same address as
    the upload limit and the API throttles, whatever other IP library happens to be installed.
    """
    return request.META.get("REMOTE_ADDR") or None


class TrustedProxyMiddleware:
    """Put the real client's address in ``REMOTE_ADDR`` when the request came through a trusted proxy.

    Behind a reverse proxy every request arrives from the proxy's address, so the anonymous upload
    limit, the API throttles and the login lockout would count the whole world as one client.
    X-Forwarded-For is believed only from the proxies named in ``OBVERSE_TRUSTED_PROXIES`` (none by
    default: then the header is ignored, and nobody can forge an address by sending it). First in the
    middleware list, so everything after it (DRF with ``NUM_PROXIES = 0``, django-axes, the views)
    reads one address. The proxy's own address is kept in ``OBVERSE_PROXY_ADDR`` for the logs.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.trusted = trusted_networks(settings.OBVERSE_TRUSTED_PROXIES)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        remote_addr = request.META.get("REMOTE_ADDR", "")
        forwarded_for = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if self.trusted and forwarded_for:
            client = forwarded_client(remote_addr, forwarded_for, self.trusted)
            if client != remote_addr:
                request.META["OBVERSE_PROXY_ADDR"] = remote_addr
                request.META["REMOTE_ADDR"] = client
        return self.get_response(request)
