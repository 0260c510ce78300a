"""What is checked and kept at the door: upload checks, the anonymous rate limit, private storage of raw photos.

``submission_validate`` runs cheap checks only (sizes, the photo's header, contact details, the
rate limit); decoding the pixels is the worker's, which fails the submission if they are damaged.
"""

from __future__ import annotations

import ipaddress
import shutil
from collections.abc import Sequence
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.core.files.uploadedfile import UploadedFile
from django.db.models import BooleanField, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from identification.models import DeclaredSide, Submission

# Markup at the start of a file (or anywhere in its first KiB, as in GIF/HTML polyglots) is what a
# browser would sniff as a page; such an upload is refused at once, whatever its name or declared type.
MARKUP_SIGNATURES = (b"<html", b"<svg", b"<script", b"<!doctype", b"<body", b"<iframe")


def private_uploads() -> FileSystemStorage:
    """Raw uploads, kept outside the public media folder until re-encoded without metadata."""
    return FileSystemStorage(location=settings.OBVERSE_PRIVATE_UPLOADS)


def uploads_discard(storage: FileSystemStorage, submission_id) -> None:
    """Remove a submission's upload folder, including a file left half-written by a full disk."""
    shutil.rmtree(storage.path(str(submission_id)), ignore_errors=True)


def decode_limits():
    """The photo limits of this site: mlcore's, with the upload size the settings allow.

    The upload check and the worker's decoding use the same ones, so a photo accepted at the door is
    not refused by the worker for its size.
    """
    from mlcore.imageio import DecodeLimits

    return DecodeLimits(max_bytes=settings.OBVERSE_MAX_UPLOAD_BYTES)


def submission_validate(
    *,
    files: Sequence[UploadedFile],
    sides: Sequence[str],
    requester_name: str,
    requester_email: str,
    user,
    client_ip,
    contact_required: bool = True,
) -> dict[str, list[str]]:
    """Field → reasons; empty when the submission may be accepted.

    Cheap checks only: sizes, the photo's header (no pixel is decoded), contact details and the
    anonymous rate limit. Decoding is the worker's, which fails the submission if the pixels are damaged.
    """
    errors: dict[str, list[str]] = {}
    photo_errors = _photo_errors(files)
    if photo_errors:
        errors["images"] = photo_errors
    if sides and len(sides) != len(files):
        errors["sides"] = ["Give one side per photo (obverse, reverse or unknown)."]
    elif any(side not in DeclaredSide.values for side in sides):
        errors["sides"] = ["Each side must be one of: obverse, reverse, unknown."]
    if user is None or not user.is_authenticated:
        if contact_required and not requester_name.strip():
            errors["requester_name"] = ["Tell us your name so a curator can reply."]
        if contact_required and not requester_email.strip():
            errors["requester_email"] = ["An email address is required so we can tell you the result."]
        if not errors and _rate_limited(client_ip=client_ip, email=requester_email):
            limit = settings.OBVERSE_ANON_SUBMISSIONS_PER_HOUR
            errors["non_field_errors"] = [
                f"Too many submissions in the last hour (at most {limit} from one network or email address); "
                "please try again later."
            ]
    return errors


def _photo_errors(files: Sequence[UploadedFile]) -> list[str]:
    """Why the photos cannot be accepted: their number, sizes, markup, or a header that is not a photo's."""
    from mlcore.imageio import ImageDecodeError, probe_image

    if not files:
        return ["Add one or two photos."]
    if len(files) > 2:
        return ["At most two photos (one per side)."]
    reasons = []
    for upload in files:
        if upload.size == 0:
            reasons.append(f"{upload.name}: the file is empty.")
        elif upload.size > settings.OBVERSE_MAX_UPLOAD_BYTES:
            reasons.append(f"{upload.name}: larger than {settings.OBVERSE_MAX_UPLOAD_BYTES // 2**20} MB.")
        elif _is_markup(upload):
            reasons.append(
                f"{upload.name}: this is a web page or drawing (HTML/SVG), not a photo. Upload a JPEG, PNG or WebP."
            )
        else:
            # The header only (format, dimensions): documents, bombs and tiny or strip-shaped
            # pictures are refused here, with nothing stored; damaged pixel data is the worker's.
            try:
                probe_image(upload, limits=decode_limits())
            except ImageDecodeError as exc:
                reasons.append(f"{upload.name}: {exc}")
    return reasons


def _is_markup(upload: UploadedFile) -> bool:
    upload.seek(0)
    head = upload.read(1024)
    upload.seek(0)
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n\x00").lower()
    return stripped.startswith(b"<") or any(signature in head.lower() for signature in MARKUP_SIGNATURES)


def _rate_limited(*, client_ip: str | None, email: str) -> bool:
    """Whether this network or this email address has used up the anonymous submissions of the last hour.

    Only anonymous submissions count (signed-in users and API partners are limited elsewhere, if at
    all). An IPv6 client is counted by its /64 network, which one household or phone usually holds
    whole; an email by its address without a "+tag" and case, so "Ada+1@x.org" is "ada@x.org".
    """
    since = timezone.now() - timedelta(hours=1)
    recent = Submission.objects.filter(created_at__gte=since, submitted_by__isnull=True)
    limit = settings.OBVERSE_ANON_SUBMISSIONS_PER_HOUR
    if client_ip and _same_network(recent, client_ip).count() >= limit:
        return True
    local, at, domain = email.strip().lower().rpartition("@")
    if not at or not local:
        return False
    base = local.split("+", 1)[0]
    same_person = Q(requester_email__iexact=f"{base}@{domain}") | Q(
        requester_email__istartswith=f"{base}+", requester_email__iendswith=f"@{domain}"
    )
    return recent.filter(same_person).count() >= limit


def _same_network(submissions: QuerySet[Submission], client_ip: str) -> QuerySet[Submission]:
    """The submissions from this address, or from its /64 network for an IPv6 client."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        address = None
    if address is not None and address.version == 6 and address.ipv4_mapped is None:
        network = str(ipaddress.ip_network(f"{address}/64", strict=False))
        return submissions.filter(RawSQL("client_ip <<= %s::inet", [network], output_field=BooleanField()))
    return submissions.filter(client_ip=client_ip)
