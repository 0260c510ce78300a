"""Pages of "Identify a specimen": the upload form, example photos, progress and the evidence page."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from identification import examples, results, selectors, services
from identification.forms import CandidateFilterForm, ObjectChoiceForm, SubmissionForm
from identification.models import ProcessingStep, SubmissionStatus

PIPELINE_STEPS = [step for step in ProcessingStep if step != ProcessingStep.READY]


def _client_ip(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


# Where each of the service's reasons is shown on the upload form.
FORM_ERROR_PLACES = {
    "images": "photos",
    "sides": "photos",
    "idempotency_key": "form",
    "non_field_errors": "form",
    "__all__": "form",
}


@require_http_methods(["GET", "POST"])
def identify(request: HttpRequest) -> HttpResponse:
    form = SubmissionForm(request.POST or None, request.FILES or None)
    errors: dict[str, list[str]] = {}
    status = None
    if request.method == "POST" and form.is_valid():
        files, sides = form.files_and_sides()
        data = form.cleaned_data
        try:
            submission = services.submission_create(
                files=files,
                sides=sides,
                notes=data["notes"],
                requester_name=data["requester_name"],
                requester_email=data["requester_email"],
                user=request.user,
                client_ip=_client_ip(request),
                photo_licence=data["photo_licence"],
                photo_credit=data["photo_credit"],
                idempotency_key=data["idempotency_key"],
            )
        except services.AlreadySent as exc:  # sent again (Back, then Identify): the first one is the answer
            messages.info(request, "You had sent these photos already: here is their identification.")
            return redirect(exc.submission)
        except ValidationError as exc:
            for field, reasons in exc.message_dict.items():
                errors.setdefault(FORM_ERROR_PLACES.get(field, field), []).extend(reasons)
        except services.StorageUnavailable as exc:  # disk full or unwritable: the form again, with the reason
            errors["form"] = [exc.message]
            status = exc.status
        else:
            return redirect(submission)
    elif request.method == "POST":
        for field, reasons in form.errors.items():
            errors.setdefault(FORM_ERROR_PLACES.get(field, field), []).extend(reasons)
    context = {
        "form": form,
        "errors": errors,
        "error_count": sum(len(reasons) for reasons in errors.values()),
        # A browser never fills a file input again; the page's script avoids this by sending in place.
        "photos_lost": bool(errors and request.FILES),
        # A new key for each sending; the same key again when the form comes back with errors.
        "idempotency_key": getattr(form, "cleaned_data", {}).get("idempotency_key") or uuid.uuid4(),
        "examples": examples.example_photos(),
    }
    return render(request, "identification/identify.html", context, status=status or (400 if errors else 200))


@require_POST
def identify_example(request: HttpRequest, key: str) -> HttpResponse:
    photo = examples.example_get(key)
    if photo is None:
        raise Http404("No such example photo.")
    upload = SimpleUploadedFile(photo.path.name, photo.path.read_bytes(), content_type="image/jpeg")
    try:
        submission = services.submission_create(
            files=[upload],
            notes=f"Example photo: {photo.label}",
            requester_name="Example photo",
            user=request.user,
            client_ip=_client_ip(request),
            contact_required=False,
        )
    except ValidationError as exc:
        messages.error(request, " ".join(sum(exc.message_dict.values(), [])))
        return redirect("identification:identify")
    except services.StorageUnavailable as exc:
        messages.error(request, exc.message)
        return redirect("identification:identify")
    return redirect(submission)


@require_GET
def example_image(request: HttpRequest, key: str) -> FileResponse:
    photo = examples.example_get(key)
    if photo is None:
        raise Http404("No such example photo.")
    return FileResponse(photo.path.open("rb"), content_type="image/jpeg")


def _steps(submission) -> list[dict]:
    keys = [step.value for step in PIPELINE_STEPS]
    current = keys.index(submission.step) if submission.step in keys else len(keys)
    finished = submission.is_finished_processing and submission.status != SubmissionStatus.FAILED
    return [
        {
            "label": step.label,
            "state": "done" if finished or i < current else ("current" if i == current else "todo"),
        }
        for i, step in enumerate(PIPELINE_STEPS)
    ]


def _object_map(image) -> dict | None:
    """The objects found in a photo of several, outlined on the stored photo (its pixels) for the user to pick.

    None when the photo showed one object (nothing to pick) or was processed before boxes were
    stored as fractions of the photo.
    """
    found = [d for d in image.detections or [] if d.get("fraction")]
    if len(found) < 2 or len(found) != len(image.detections) or not image.original:
        return None
    try:
        width, height = image.original.width, image.original.height
    except (OSError, ValueError):  # the stored photo is missing: nothing to draw on
        return None
    objects = []
    for index, detection in enumerate(found):
        x0, y0, x1, y1 = detection["fraction"]
        objects.append(
            {
                "index": index,
                "number": index + 1,
                "chosen": bool(detection.get("chosen")),
                "x": round(x0 * width),
                "y": round(y0 * height),
                "width": max(1, round((x1 - x0) * width)),
                "height": max(1, round((y1 - y0) * height)),
            }
        )
    # Labels sized to the photo, so they read the same however large it was.
    return {"width": width, "height": height, "font": max(12, max(width, height) // 18), "objects": objects}


def _queue(submission) -> dict:
    """The status in words and, until it is processed, the place in the queue and the wait."""
    text = ""
    if not submission.is_finished_processing:
        place = selectors.queue_place(submission)
        text = results.queue_text(**place, workers=settings.Q_CLUSTER["workers"])
    return {"status_text": results.status_text(submission), "queue_text": text}


def _image_url(field) -> str:
    return field.url if field else ""


def _compare_data(images, candidates) -> dict:
    """What the comparison viewer shows for each candidate and photo (the page's JSON data island)."""
    query = [
        {
            "position": image.position,
            "side": image.side if image.side in ("obverse", "reverse") else "",
            "cutout": _image_url(image.cutout),
            "upright": _image_url(image.upright),
            "original": _image_url(image.original),
        }
        for image in images
    ]
    rows = []
    for candidate in candidates:
        matched = candidate.matched_image
        item = candidate.item
        rows.append(
            {
                "rank": candidate.rank,
                "label": item.reference or item.title,
                "query": candidate.query_image.position if candidate.query_image else 0,
                "image": (_image_url(matched.cutout) or _image_url(matched.image) or matched.remote_url)
                if matched
                else "",
                "is_cutout": bool(matched and matched.cutout),
                "side": matched.side if matched else "",
                "rotation": round(candidate.rotation, 1),
                "specimen": matched.specimen.record_id if matched else "",
            }
        )
    return {"query": query, "candidates": rows}


@require_GET
def submission_detail(request: HttpRequest, pk) -> HttpResponse:
    submission = selectors.submission_get(pk=pk)
    if submission is None:
        raise Http404("No such submission.")
    images = list(submission.images.all())
    candidates = list(submission.candidates.all())
    for image in images:
        image.object_map = _object_map(image)
        image.facts, image.withheld = results.facts(image, candidates)
    finished = submission.can_narrow_candidates
    tie = results.design_tie(images, candidates) if finished else None
    context = {
        "submission": submission,
        "steps": _steps(submission),
        **_queue(submission),
        "images": images,
        "candidates": candidates,
        "confident": results.is_confident([candidate.total for candidate in candidates]),
        "tie": tie,
        "tied_ranks": tie.ranks if tie else [],
        "compare": _compare_data(images, candidates) if finished else None,
        # Picking another object is offered until the first review (services.submission_choose_object).
        "can_choose_object": submission.status == SubmissionStatus.AWAITING_REVIEW and not submission.reviews.exists(),
        "can_say_none_match": submission.is_open,
        "filters": submission.filters or {},
        "filter_choices": selectors.narrowing_choices(
            candidate_item_ids=[c.item_id for c in candidates], current=submission.filters or {}
        )
        if finished
        else [],
    }
    return render(request, "identification/submission_detail.html", context)


@require_GET
def submission_status(request: HttpRequest, pk) -> JsonResponse:
    submission = selectors.submission_get(pk=pk)
    if submission is None:
        raise Http404("No such submission.")
    return JsonResponse(
        {
            "status": submission.status,
            "step": submission.step,
            "finished": submission.is_finished_processing,
            "steps": _steps(submission),
            **_queue(submission),
        }
    )


@require_POST
def submission_recompute(request: HttpRequest, pk) -> HttpResponse:
    if selectors.submission_get(pk=pk) is None:  # an unknown UUID is a 404, not a server error
        raise Http404("No such submission.")
    form = CandidateFilterForm(request.POST)
    if form.is_valid():
        try:
            submission = services.submission_recompute(submission_id=pk, filters=form.cleaned_data)
        except ValidationError as exc:
            messages.error(request, " ".join(sum(exc.message_dict.values(), [])))
        else:
            if not submission.is_finished_processing:  # its index was replaced: the worker searches again
                messages.info(request, "Your photos are being described again with the current model, then searched.")
    else:
        messages.error(request, "Give the years as whole numbers between -3000 and 3000 (negative for BC).")
    return redirect(f"{reverse('identification:submission_detail', kwargs={'pk': pk})}#candidates-title")


@require_POST
def submission_choose_object(request: HttpRequest, pk) -> HttpResponse:
    if selectors.submission_get(pk=pk) is None:
        raise Http404("No such submission.")
    form = ObjectChoiceForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Pick one of the objects outlined on your photo.")
    else:
        try:
            services.submission_choose_object(submission_id=pk, **form.cleaned_data)
        except ValidationError as exc:
            messages.error(request, " ".join(sum(exc.message_dict.values(), [])))
        else:
            number = form.cleaned_data["index"] + 1
            messages.success(request, f"Object {number} it is: your photo is being described again.")
    return redirect("identification:submission_detail", pk=pk)


@require_POST
def submission_none_match(request: HttpRequest, pk) -> HttpResponse:
    if selectors.submission_get(pk=pk) is None:
        raise Http404("No such submission.")
    try:
        services.submission_none_match(submission_id=pk)
    except ValidationError as exc:
        messages.error(request, " ".join(sum(exc.message_dict.values(), [])))
    else:
        messages.success(request, "Thank you: the reviewers will see that none of these look right to you.")
    return redirect("identification:submission_detail", pk=pk)
