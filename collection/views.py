"""Public pages of the digital collection: home, item list with search and facets, item, specimen, concept."""

from __future__ import annotations

from urllib.parse import urlencode

from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET

from collection import selectors
from collection.filtersets import FACET_KINDS, ItemFilterSet
from collection.linked_data import iiif
from collection.linked_data.links import RDF_FORMATS
from collection.models import Concept, ItemStatus
from collection.roles import is_curator

ITEMS_PER_PAGE = 24
FACET_VISIBLE_VALUES = 8  # the rest fold behind "more"


def _page(request: HttpRequest, object_list, per_page: int = ITEMS_PER_PAGE) -> Page:
    return Paginator(object_list, per_page).get_page(request.GET.get("page"))


def _url_with(params: QueryDict, **changes: list[str]) -> str:
    """The query string of ``params`` with some keys replaced (empty list removes), page dropped."""
    query = params.copy()
    query.pop("page", None)
    for key, values in changes.items():
        query.setlist(key, values)
    return "?" + query.urlencode() if query else "?"


def _facet_links(facets: list[selectors.Facet], params: QueryDict) -> list[dict[str, str]]:
    """Give each facet value the URL that toggles it, fold long facets, and list removable "chips".

    Links keep the rest of the state (search, other facets, dates, sort) so every view is shareable.
    """
    chips = []
    for facet in facets:
        chosen = params.getlist(facet.kind)
        for value in facet.values:
            toggled = [s for s in chosen if s != value.slug] if value.selected else [*chosen, value.slug]
            value.toggle_url = _url_with(params, **{facet.kind: toggled})
            if value.selected:
                chips.append({"label": f"{facet.label}: {value.label}", "remove_url": value.toggle_url})
        head, tail = facet.values[:FACET_VISIBLE_VALUES], facet.values[FACET_VISIBLE_VALUES:]
        facet.shown = head + [v for v in tail if v.selected]
        facet.more = [v for v in tail if not v.selected]
        # A slug in the URL that names no concept still filters (to nothing); show it so it can be removed.
        known = {value.slug for value in facet.values}
        for slug in chosen:
            if slug not in known:
                rest = [s for s in chosen if s != slug]
                chips.append({"label": f"{facet.label}: {slug}", "remove_url": _url_with(params, **{facet.kind: rest})})
    for key, label in (("q", "Search"), ("date_from", "From"), ("date_to", "To"), ("status", "Status")):
        if params.get(key):
            chips.append({"label": f"{label}: {params[key]}", "remove_url": _url_with(params, **{key: []})})
    return chips


def _rdf_wanted(request: HttpRequest, document: str, pk: int) -> HttpResponse | None:
    """A 303 to the record's RDF when the client prefers RDF to HTML (linked-data content negotiation)."""
    preferred = request.get_preferred_type(["text/html", *RDF_FORMATS.values()])
    for fmt, media_type in RDF_FORMATS.items():
        if preferred == media_type:
            response = HttpResponseRedirect(reverse(f"collection:{document}", kwargs={"pk": pk, "fmt": fmt}))
            response.status_code = 303
            patch_vary_headers(response, ["Accept"])
            return response
    return None


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    browse = selectors.item_facets(data=QueryDict(), queryset=selectors.item_queryset(), kinds=["authority", "mint"])
    context = {
        "figures": selectors.collection_figures(),
        "recent": selectors.recent_items(),
        "browse": [(facet, facet.values[:10]) for facet in browse if facet.values],
    }
    return render(request, "collection/home.html", context)


@require_GET
def item_list(request: HttpRequest) -> HttpResponse:
    base = selectors.item_queryset(user=request.user)
    filterset = ItemFilterSet(data=request.GET, queryset=base)
    page = _page(request, selectors.item_with_related(filterset.qs))
    facets = selectors.item_facets(data=request.GET, queryset=base)
    params = request.GET
    chips = _facet_links(facets, params)
    context = {
        "filterset": filterset,
        "form": filterset.form,
        "page": page,
        "facets": [facet for facet in facets if facet.values],
        "chips": chips,
        "hidden_facet_params": [(kind, slug) for kind in FACET_KINDS for slug in params.getlist(kind)],
        "bounds": selectors.item_summary(filterset.qs),
        "sort_choices": ItemFilterSet.SORT_CHOICES,
        "current_sort": params.get("sort") or ("relevance" if params.get("q") else "reference"),
        "show_status": request.user.is_authenticated and is_curator(request.user),
    }
    return render(request, "collection/item_list.html", context, status=400 if filterset.errors else 200)


@require_GET
def item_detail(request: HttpRequest, pk: int) -> HttpResponse:
    if redirect := _rdf_wanted(request, "item_document", pk):
        return redirect
    item = get_object_or_404(selectors.item_with_related(selectors.item_queryset(user=request.user)), pk=pk)
    context = {
        "item": item,
        "concepts": sorted(item.concepts.all(), key=lambda c: (c.kind != "authority", c.kind, c.label)),
        "specimens": item.public_specimens,
        "measurements": selectors.specimen_measurements(item.public_specimens),
        "is_published": item.status == ItemStatus.PUBLISHED,
        "can_curate": is_curator(request.user),
    }
    response = render(request, "collection/item_detail.html", context)
    patch_vary_headers(response, ["Accept"])
    return response


@require_GET
def specimen_detail(request: HttpRequest, pk: int) -> HttpResponse:
    if redirect := _rdf_wanted(request, "specimen_document", pk):
        return redirect
    qs = selectors.specimen_queryset(user=request.user).prefetch_related("images", "item__concepts")
    specimen = get_object_or_404(qs, pk=pk)
    item = specimen.item
    # A specimen of an unpublished type links to it only for those who may see that type.
    item_visible = item is not None and (
        item.status == ItemStatus.PUBLISHED or selectors.item_queryset(user=request.user).filter(pk=item.pk).exists()
    )
    images = list(specimen.images.all())
    context = {
        "specimen": specimen,
        "item": item if item_visible else None,
        "images": images,
        "source": specimen.source or (item.source if item_visible else None),
        "can_curate": is_curator(request.user),
        "has_manifest": any(iiif.has_service(image) for image in images),
    }
    response = render(request, "collection/specimen_detail.html", context)
    patch_vary_headers(response, ["Accept"])
    return response


@require_GET
def concept_detail(request: HttpRequest, kind: str, slug: str) -> HttpResponse:
    concept = get_object_or_404(Concept, kind=kind, slug=slug)
    page = _page(request, selectors.concept_items(concept=concept, user=request.user))
    context = {
        "concept": concept,
        "page": page,
        "filter_url": f"?{urlencode({kind: slug})}" if kind in FACET_KINDS else "",
    }
    return render(request, "collection/concept_detail.html", context)
