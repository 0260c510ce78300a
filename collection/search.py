"""Full-text search over catalogue items, on plain PostgreSQL (no extension beyond pgvector).

Each Item keeps two denormalised columns, rebuilt here (never by signals): ``search_vector``
(weighted tsvector: reference/title A, legends and concept labels B, descriptions C) and
``search_text`` (lower-cased plain text). Queries combine a prefix tsquery, so ``CONSTANTI`` finds
``CONSTANTINVS``, with a substring match on ``search_text`` for fragments inside a word (a legend
broken by a die break, ``STANTIN``). The embedded PostgreSQL ships without pg_trgm, so trigram
similarity is not relied on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.contrib.postgres.search import SearchQuery, SearchRank
from django.db import connection
from django.db.models import F, FloatField, Q, QuerySet, Value

from collection.models import Item

# 'simple' configuration: legends are Latin/Greek abbreviations that English stemming would mangle.
_REFRESH_SQL = """
WITH labels AS (
    SELECT ic.item_id, string_agg(c.label, ' ') AS text
    FROM collection_item_concepts ic JOIN collection_concept c ON c.id = ic.concept_id
    WHERE ic.item_id = ANY(%(ids)s)
    GROUP BY ic.item_id
)
UPDATE collection_item AS i SET
    search_vector =
        setweight(to_tsvector('simple', coalesce(i.reference, '') || ' ' || coalesce(i.title, '')), 'A')
        || setweight(to_tsvector('simple', coalesce(i.obverse_legend, '') || ' ' || coalesce(i.reverse_legend, '')
                                  || ' ' || coalesce(labels.text, '')), 'B')
        || setweight(to_tsvector('simple', coalesce(i.obverse_description, '') || ' '
                                  || coalesce(i.reverse_description, '') || ' ' || coalesce(i.description, '')), 'C'),
    search_text = lower(concat_ws(' ', i.reference, i.title, i.obverse_legend, i.reverse_legend,
                                  i.obverse_description, i.reverse_description, i.description, labels.text))
FROM collection_item AS i2 LEFT JOIN labels ON labels.item_id = i2.id
WHERE i.id = i2.id AND i.id = ANY(%(ids)s)
"""


def item_refresh_search(*, item_ids: Iterable[int]) -> None:
    """Rebuild the search columns of the given items (call after writing an item or its concepts)."""
    ids = list(item_ids)
    if not ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(_REFRESH_SQL, {"ids": ids})


_WORD = re.compile(r"[\w]+", re.UNICODE)


def query_terms(text: str) -> list[str]:
    """Lower-cased words of a user's query, punctuation dropped ('[DV] CONSTANTI-NVS' → dv, constanti, nvs)."""
    return [term.lower() for term in _WORD.findall(text or "")][:12]


def prefix_tsquery(terms: list[str]) -> str:
    """A to_tsquery string where every term may be a prefix: 'constanti:* & avg:*'."""
    return " & ".join(f"{term}:*" for term in terms)


def item_search(qs: QuerySet[Item], *, text: str) -> QuerySet[Item]:
    """Items matching every word of ``text``, ranked; ``rank`` is annotated for sorting.

    A word matches as a prefix of an indexed word (ranked with ts_rank over the weighted vector)
    or as a substring of the plain search text, so a fragment of a legend such as ``STANTIN``
    still finds ``CONSTANTINVS`` (pg_trgm is not available, so no similarity search).
    """
    terms = query_terms(text)
    if not terms:
        return qs.annotate(rank=Value(0.0, output_field=FloatField()))
    query = SearchQuery(prefix_tsquery(terms), search_type="raw", config="simple")
    substring = Q()
    for term in terms:
        substring &= Q(search_text__contains=term)
    return qs.filter(Q(search_vector=query) | substring).annotate(rank=SearchRank(F("search_vector"), query))
