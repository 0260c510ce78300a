"""URLs of the linked-data documents, beside the pages they describe (included by collection.urls).

Numishare's convention: a record's page is its URI, ``<page>.xml`` its NUDS record and
``.ttl`` / ``.jsonld`` / ``.rdf`` its RDF; IIIF lives under ``/iiif/``.
"""

from __future__ import annotations

from django.urls import path, re_path

from collection.linked_data import nomisma, views

DOCUMENT_FORMATS = "xml|ttl|jsonld|rdf"

urlpatterns = [
    re_path(
        rf"^specimens/(?P<pk>[0-9]+)\.(?P<fmt>{DOCUMENT_FORMATS})$",
        views.specimen_document,
        name="specimen_document",
    ),
    re_path(rf"^items/(?P<pk>[0-9]+)\.(?P<fmt>{DOCUMENT_FORMATS})$", views.item_document, name="item_document"),
    path("specimens/<int:pk>/linked-art.json", views.specimen_linked_art, name="specimen_linked_art"),
    path("specimens/<int:pk>/viewer/", views.iiif_viewer, name="iiif_viewer"),
    path("iiif/specimens/<int:pk>/manifest.json", views.iiif_manifest, name="iiif_manifest"),
    path("iiif/items/<int:pk>/collection.json", views.iiif_item_collection, name="iiif_item_collection"),
    path("iiif/images/<int:pk>", views.iiif_image_base, name="iiif_image_base"),
    path("iiif/images/<int:pk>/info.json", views.iiif_image_info, name="iiif_image_info"),
    path(
        "iiif/images/<int:pk>/<str:region>/<str:size>/<str:rotation>/<str:filename>",
        views.iiif_image_file,
        name="iiif_image_file",
    ),
    re_path(r"^linked-data/void\.(?P<fmt>ttl|jsonld|rdf)$", views.void_document, name="void_document"),
    path("linked-data/void", views.void, name="void"),
    path(f"linked-data/{nomisma.DUMP_NAME}", views.rdf_dump, name="rdf_dump"),
]
