"""Natural order for references, record ids and labels: "RIC 2" before "RIC 10", "69b" before "658j".

Catalogue references mix words and numbers; sorted as text, "ODC 10" comes before "ODC 2". The
database (``natural``, for ORDER BY) and Python (``natural_key``, for lists built in memory) use the
same key: every run of digits is zero-padded to ``DIGITS`` places, so comparing keys as text is the
natural order. (PostgreSQL's ICU collations can sort numerically, but the embedded server is built
without ICU.) Numbers longer than ``DIGITS`` digits keep their last ``DIGITS`` in the database.
"""

from __future__ import annotations

import re

from django.db.models import CharField, Func, Value

DIGITS = 10


def natural_key(text: str | None) -> str:
    """The text with each number zero-padded: sorting by it is sorting naturally."""
    return re.sub(r"\d+", lambda match: match.group().zfill(DIGITS), text or "")


def natural(expression) -> Func:
    """The same key computed by PostgreSQL, for ``order_by(natural("reference"))``."""
    padded = Func(expression, Value(r"(\d+)"), Value("0" * DIGITS + r"\1"), Value("g"), function="regexp_replace")
    return Func(
        padded,
        Value(rf"\d*(\d{{{DIGITS}}})"),
        Value(r"\1"),
        Value("g"),
        function="regexp_replace",
        output_field=CharField(),
    )
