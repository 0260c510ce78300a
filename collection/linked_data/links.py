"""Absolute URLs of every published document, in one place, so each format links to the others.

Documents served to a request use that request's scheme and host (so a manifest is usable from
wherever the site is reached, tests included); files written by a command (``export_rdf``,
``export_nuds``) use ``OBVERSE_SITE_URL``, which must then be the site's public address.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse

RDF_FORMATS = {"ttl": "text/turtle", "jsonld": "application/ld+json", "rdf": "application/rdf+xml"}


@dataclass(frozen=True)
class Links:
    """URL builder over one base (``https://coins.example.org``)."""

    base: str

    @classmethod
    def for_request(cls, request: HttpRequest | None = None) -> Links:
        if request is not None:
            return cls(request.build_absolute_uri("/").rstrip("/"))
        return cls(settings.OBVERSE_SITE_URL.rstrip("/"))

    def url(self, path: str) -> str:
        """``path`` made absolute; an already absolute URL (media on object storage) is kept."""
        return path if path.startswith(("http://", "https://")) else f"{self.base}{path}"

    def _reverse(self, name: str, **kwargs) -> str:
        return self.url(reverse(f"collection:{name}", kwargs=kwargs))

    # The objects themselves: their pages are their URIs (RDF asked of them is a 303 to the document).
    def specimen(self, pk: int) -> str:
        return self._reverse("specimen_detail", pk=pk)

    def item(self, pk: int) -> str:
        return self._reverse("item_detail", pk=pk)

    def concept(self, kind: str, slug: str) -> str:
        return self._reverse("concept_detail", kind=kind, slug=slug)

    # Their documents.
    def specimen_document(self, pk: int, fmt: str) -> str:
        return self._reverse("specimen_document", pk=pk, fmt=fmt)

    def item_document(self, pk: int, fmt: str) -> str:
        return self._reverse("item_document", pk=pk, fmt=fmt)

    def linked_art(self, pk: int) -> str:
        return self._reverse("specimen_linked_art", pk=pk)

    def manifest(self, pk: int) -> str:
        return self._reverse("iiif_manifest", pk=pk)

    def item_collection(self, pk: int) -> str:
        return self._reverse("iiif_item_collection", pk=pk)

    def image_service(self, pk: int) -> str:
        return self._reverse("iiif_image_base", pk=pk)

    def viewer(self, pk: int) -> str:
        return self._reverse("iiif_viewer", pk=pk)

    def dataset(self) -> str:
        """The VoID dataset's URI (its description is served there)."""
        return self._reverse("void")

    def dump(self) -> str:
        return self._reverse("rdf_dump")
