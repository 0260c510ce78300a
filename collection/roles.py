"""The roles of Obverse as Django groups: volunteers review submissions, curators change the catalogue."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

VOLUNTEER = "volunteer"
CURATOR = "curator"

# Curators edit the catalogue through the admin; these are the model permissions that allows.
CURATOR_PERMISSIONS = [
    f"{action}_{model}"
    for model in ("concept", "item", "specimen", "specimenimage", "source")
    for action in ("add", "change", "delete", "view")
]


def ensure_role_groups() -> None:
    """Create the volunteer and curator groups (idempotent) and give curators catalogue permissions."""
    Group.objects.get_or_create(name=VOLUNTEER)
    curators, _ = Group.objects.get_or_create(name=CURATOR)
    curators.permissions.add(
        *Permission.objects.filter(content_type__app_label="collection", codename__in=CURATOR_PERMISSIONS)
    )


def is_volunteer(user) -> bool:
    return user.is_authenticated and (user.is_superuser or user.groups.filter(name__in=[VOLUNTEER, CURATOR]).exists())


def is_curator(user) -> bool:
    return user.is_authenticated and (user.is_superuser or user.groups.filter(name=CURATOR).exists())
