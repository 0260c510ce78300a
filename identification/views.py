"""Pages of "Identify a specimen": the upload form, example photos, progress and the evidence page."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from collection.models import CANDIDATE_FILTER_KINDS, Concept
from identification import examples, selectors, services
from identification.forms import CandidateFilterForm, ObjectChoiceForm, SubmissionForm
from identification.models import ProcessingStep, SubmissionStatus

PIPELINE_STEPS = [step for step in ProcessingStep if step != ProcessingStep.READY]


def _client_ip(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


@require_http_methods(["GET", "POST"])
def identify(request: HttpRequest) -> HttpResponse:
    form = SubmissionForm(request.POST or None, request.FILES or None)
    status = None
    if request.method == "POST" and form.is_valid():
        files, sides = form.files_and_sides()
        try:
            submission = services.submission_create(
                files=files,
                sides=sides,
                notes=form.cleaned_data["notes"],
                requester_name=form.cleaned_data["requester_name"],
                requester_email=form.cleaned_data["requester_email"],
                user=request.user,
                client_ip=_client_ip(request),
            )
        except ValidationError as exc:
            for field, reasons in exc.message_dict.items():
                target = {"images": "photo_1", "sides": "side_1"}.get(field, field)
                form.add_error(target if target in form.fields else None, reasons)
        except services.StorageUnavailable as exc:  # disk full or unwritable: the form again, with the reason
            form.add_error(None, exc.message)
            status = exc.status
        else:
            return redirect(submission)
    context = {"form": form, "examples": examples.example_photos()}
    return render(request, "identification/identify.html", context, status=status or (400 if form.errors else 200))


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


def _filter_choices(submission) -> list[dict]:
    """Concepts offered to narrow the candidates (those of the current candidates), current ones selected."""
    item_ids = [candidate.item_id for candidate in submission.candidates.all()]
    kinds = list(CANDIDATE_FILTER_KINDS)
    concepts = Concept.objects.filter(items__in=item_ids, kind__in=kinds).distinct().order_by("label")
    current = submission.filters or {}
    options: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for concept in concepts:
        options[concept.kind].append(
            {"slug": concept.slug, "label": concept.label, "selected": current.get(concept.kind) == concept.slug}
        )
    return [{"kind": kind, "options": options[kind]} for kind in kinds if options[kind]]


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


@require_GET
def submission_detail(request: HttpRequest, pk) -> HttpResponse:
    submission = selectors.submission_get(pk=pk)
    if submission is None:
        raise Http404("No such submission.")
    images = list(submission.images.all())
    for image in images:
        image.object_map = _object_map(image)
    context = {
        "submission": submission,
        "steps": _steps(submission),
        "images": images,
        "candidates": list(submission.candidates.all()),
        # Picking another object is offered until the first review (services.submission_choose_object).
        "can_choose_object": submission.status == SubmissionStatus.AWAITING_REVIEW and not submission.reviews.exists(),
        "can_say_none_match": submission.is_open,
        "filter_choices": _filter_choices(submission) if submission.is_finished_processing else [],
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
    return redirect("identification:submission_detail", pk=pk)


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
