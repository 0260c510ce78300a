"""Top-level URLs: public pages, API v1, admin, health."""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.views.decorators.http import require_GET
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView

from collection.api import errors as api_errors
from collection.context_processors import SITE_NAME
from config.health import healthz

# Django's auth views name the site after the request's host ("127.0.0.1:8000"); ours is Obverse.
AUTH_CONTEXT = {"site_name": SITE_NAME}


@require_GET
def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    """Browsers ask for /favicon.ico whatever the page links: answer with the site's icon."""
    return HttpResponsePermanentRedirect(static("img/obverse.svg"))


urlpatterns = [
    path("", include("collection.urls")),
    path("identify/", include("identification.urls")),
    path("review/", include("review.urls")),
    path("api/v1/", include("collection.api.urls")),
    path("api/v1/", include("identification.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-docs"),
    # Any other /api/ URL (even one with a newline in it, hence [\s\S]): a 404 in the API's error
    # shape. Ends in "/" so that APPEND_SLASH still redirects /api/v1/items to /api/v1/items/.
    re_path(r"^api/(?P<path>(?:[\s\S]*/)?)$", api_errors.not_found, name="api-not-found"),
    path("accounts/login/", auth_views.LoginView.as_view(extra_context=AUTH_CONTEXT), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(extra_context=AUTH_CONTEXT), name="logout"),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("favicon.ico", favicon, name="favicon"),
]

# Under /api/ even Django's own errors (an unreadable request, a crash) answer in the API's error
# shape; everywhere else, the site's pages.
handler400 = "collection.api.errors.bad_request"
handler403 = "collection.api.errors.permission_denied"
handler500 = "collection.api.errors.server_error"

if settings.DEBUG:
    # Development only; production serves media from the web server or object storage.
    urlpatterns += [path("media/<path:path>", serve, {"document_root": settings.MEDIA_ROOT})]
