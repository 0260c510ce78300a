"""Query parameters of API v1 are checked, never guessed at: what the schema says is what is accepted.

DRF and django-filter are lenient in ways a published contract cannot be: ``page_size=abc`` falls
back to the default, ``page=last`` is a page number, and a parameter given twice quietly uses its
last value. Here each of those is a 400 naming the parameter, in the API's error shape.
"""

from __future__ import annotations

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError

from collection.filtersets import WholeNumberField

GIVE_ONCE = "Give this parameter once."


def single_value(request, name: str) -> str | None:
    """The one value of query parameter ``name`` (None when absent); 400 when it is repeated."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ValidationError({name: [GIVE_ONCE]})
    return values[0] if values else None


def bounded_int(value: str, *, name: str, minimum: int, maximum: int) -> int:
    """``value`` as a whole number in [minimum, maximum]; 400 naming ``name`` otherwise."""
    field = WholeNumberField(min_value=minimum, max_value=maximum, error_messages={"required": "Enter a whole number."})
    try:
        return field.clean(value)
    except DjangoValidationError as exc:
        raise ValidationError({name: exc.messages}) from exc


class StrictFilterBackend(DjangoFilterBackend):
    """django-filter's backend, refusing a repeated single-valued parameter, with readable messages.

    Concept parameters (``?mint=rome&mint=lyon``) are lists and may repeat; the others may not.
    Errors are taken from the form as it renders them: django-filter's own translation %-formats
    each message again, which crashed on a message quoting a value with a "%" in it.
    """

    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        repeated = {
            name: [GIVE_ONCE]
            for name, field in filterset.filters.items()
            if not isinstance(field, django_filters.MultipleChoiceFilter)
            and len(request.query_params.getlist(name)) > 1
        }
        if repeated:
            raise ValidationError(repeated)
        if not filterset.is_valid():
            raise ValidationError({name: list(messages) for name, messages in filterset.errors.items()})
        return filterset.qs
