"""What is checked and kept at the door: upload checks, the anonymous rate limit, private storage of raw photos.

``submission_validate`` runs cheap checks only (sizes, the photo's header, contact details);
decoding the pixels is the worker's, which fails the submission if they are damaged. The anonymous
rate limit (``anonymous_limit_take``) is counted inside the transaction that stores the submission.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import shutil
from collections.abc import Sequence
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import Storage
from django.core.files.uploadedfile import UploadedFile
from django.db import connection
from django.db.models import BooleanField, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from collection.models import ImageLicence
from identification.models import DeclaredSide, Submission

# Markup at the start of a file (or anywhere in its first KiB, as in GIF/HTML polyglots) is what a
# browser would sniff as a page; such an upload is refused at once, whatever its name or declared type.
MARKUP_SIGNATURES = (b"<html", b"<svg", b"<script", b"<!doctype", b"<body", b"<iframe")


def private_uploads() -> Storage:
    """Raw uploads (``STORAGES["private"]``), never served, kept apart from the public media until re-encoded."""
    from django.core.files.storage import FileSystemStorage, storages

    storage = storages["private"]
    if isinstance(storage, FileSystemStorage) and storage.location != str(settings.OBVERSE_PRIVATE_UPLOADS):
        # The setting was changed after the storage was made (tests, the benchmark's throw-away folders).
        return FileSystemStorage(location=settings.OBVERSE_PRIVATE_UPLOADS)
    return storage


def uploads_discard(storage: Storage, submission_id, *, strict: bool = False) -> None:
    """Remove a submission's uploads, including a file left half-written by a full disk.

    ``strict``: an error (other than nothing to remove) is raised, for callers that must not record
    the files as gone when they are not (retention).
    """
    try:
        folder = storage.path(str(submission_id))
    except NotImplementedError:  # a remote storage (S3): delete its files one by one
        try:
            _, names = storage.listdir(str(submission_id))
        except FileNotFoundError:
            return
        for name in names:
            storage.delete(f"{submission_id}/{name}")
        return
    if strict:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(folder)
    else:
        shutil.rmtree(folder, ignore_errors=True)


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
    contact_required: bool = True,
    photo_licence: str = ImageLicence.NONE,
) -> dict[str, list[str]]:
    """Field → reasons, every reason at once; empty when the submission may be accepted (the rate limit
    aside, see below).

    Cheap checks only: sizes, the photo's header (no pixel is decoded), contact details and the
    publication choice. Decoding is the worker's, which fails the submission if the pixels are
    damaged. The anonymous rate limit is not checked here but by ``anonymous_limit_take``, in the
    transaction that stores the submission.
    """
    errors: dict[str, list[str]] = {}
    photo_errors = _photo_errors(files)
    if photo_errors:
        errors["images"] = photo_errors
    if sides and len(sides) != len(files):
        errors["sides"] = ["Give one side per photo (obverse, reverse or unknown)."]
    elif any(side not in DeclaredSide.values for side in sides):
        errors["sides"] = ["Each side must be one of: obverse, reverse, unknown."]
    if photo_licence not in ImageLicence.values:
        errors["photo_licence"] = ["Choose whether your photos may be published, and under which licence."]
    if requester_email.strip() and not _is_email(requester_email.strip()):
        errors["requester_email"] = ["Enter a valid email address, like name@example.org."]
    if user is None or not user.is_authenticated:
        if contact_required and not requester_name.strip():
            errors["requester_name"] = ["Tell us your name so a curator can reply."]
        if contact_required and not requester_email.strip():
            errors["requester_email"] = ["An email address is required so we can tell you the result."]
    return errors


def _is_email(text: str) -> bool:
    from django.core.validators import validate_email

    try:
        validate_email(text)
    except ValidationError:
        return False
    return True


def anonymous_limit_take(*, client_ip: str | None, email: str) -> None:
    """Count this anonymous submission against its network's and its email's hourly limit, or refuse it.

    Call inside the transaction that inserts the submission. The count and the insert must be one
    step, or parallel requests all count the same rows and all pass: so the network and the email
    are locked first (PostgreSQL transaction-level advisory locks, released at commit or rollback),
    and a second request from the same network or email waits until the first one's row is
    committed, then counts it. Requests from other clients take other locks and never wait.
    Raises ValidationError (``non_field_errors``) when the limit is used up.
    """
    keys = sorted({_lock_key(f"network:{_network(client_ip)}") if client_ip else None, _email_lock(email)} - {None})
    with connection.cursor() as cursor:
        for key in keys:  # always in the same order, so two requests never wait for each other's second lock
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
    if _rate_limited(client_ip=client_ip, email=email):
        limit = settings.OBVERSE_ANON_SUBMISSIONS_PER_HOUR
        raise ValidationError(
            {
                "non_field_errors": [
                    f"Too many submissions in the last hour (at most {limit} from one network or email address); "
                    "please try again later."
                ]
            }
        )


def _lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for a name (the same in every process, unlike ``hash``)."""
    digest = hashlib.blake2b(f"obverse-anonymous-limit:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _email_lock(email: str) -> int | None:
    person = _email_person(email)
    return _lock_key(f"email:{person[0]}@{person[1]}") if person else None


def _email_person(email: str) -> tuple[str, str] | None:
    """(local part without a "+tag", domain), lower-cased: "Ada+1@X.org" is ("ada", "x.org"); None if no address."""
    local, at, domain = email.strip().lower().rpartition("@")
    if not at or not local:
        return None
    return local.split("+", 1)[0], domain


def _network(client_ip: str) -> str:
    """What one client is counted by: its IPv4 address, or the /64 network of an IPv6 address."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return client_ip
    if address.version == 6 and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _photo_errors(files: Sequence[UploadedFile]) -> list[str]:
    """Why the photos cannot be accepted: their number, sizes, markup, or a header that is not a photo's."""
    from mlcore.imageio import ImageDecodeError, probe_image

    if not files:
        return ["Add at least 1 photo: the obverse, the reverse, or both."]
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
    person = _email_person(email)
    if person is None:
        return False
    base, domain = person
    same_person = Q(requester_email__iexact=f"{base}@{domain}") | Q(
        requester_email__istartswith=f"{base}+", requester_email__iendswith=f"@{domain}"
    )
    return recent.filter(same_person).count() >= limit


def _same_network(submissions: QuerySet[Submission], client_ip: str) -> QuerySet[Submission]:
    """The submissions from this address, or from its /64 network for an IPv6 client."""
    network = _network(client_ip)
    if "/" in network:
        return submissions.filter(RawSQL("client_ip <<= %s::inet", [network], output_field=BooleanField()))
    return submissions.filter(client_ip=client_ip)
