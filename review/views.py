"""Review pages: the volunteer queue, the comparison page, curators' proposals and dashboard.

Thin views: they check login, read the form, call one service or selector (which checks the role
and raises PermissionDenied → 403) and render or redirect.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from collection.roles import is_curator
from review import rules, selectors, services
from review.models import ProposalStatus, ReviewDecision


def _render(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    # The review area's sub-navigation shows curator links only to curators.
    return render(request, template, {**context, "is_curator": is_curator(request.user)}, status=status)


def _errors(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return " ".join(sum(exc.message_dict.values(), []))
    return " ".join(exc.messages)


def _queue_filters(params) -> selectors.QueueFilters:
    return selectors.QueueFilters(
        side=params.get("side", ""),
        material=params.get("material", "").strip()[:100],
        two_photos=params.get("two_photos") in {"1", "on", "true"},
    )


@login_required
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    filters = _queue_filters(request.GET)
    services.claims_release_expired()
    context = {
        "submissions": selectors.queue_page(user=request.user, filters=filters),
        "claims": selectors.claims_of(user=request.user),
        "filters": filters,
        "query": request.GET.urlencode(),
    }
    return _render(request, "review/queue.html", context)


@login_required
@require_POST
def queue_next(request: HttpRequest) -> HttpResponse:
    claim = services.queue_next(user=request.user, filters=_queue_filters(request.POST))
    if claim is None:
        messages.info(request, "Nothing is waiting for you in the queue. Thank you!")
        return redirect("review:queue")
    return redirect("review:review", pk=claim.submission_id)


@login_required
@require_POST
def claim(request: HttpRequest, pk) -> HttpResponse:
    try:
        services.submission_claim(submission_id=pk, user=request.user)
    except services.ReviewConflict as exc:
        messages.warning(request, str(exc))
        return redirect("review:queue")
    except ValidationError as exc:
        raise Http404(_errors(exc)) from exc
    return redirect("review:review", pk=pk)


@login_required
@require_POST
def release(request: HttpRequest, pk) -> HttpResponse:
    if services.claim_release(submission_id=pk, user=request.user):
        messages.info(request, "Released: the submission is back in the queue.")
    return redirect("review:queue")


@login_required
def review(request: HttpRequest, pk) -> HttpResponse:
    """GET: the comparison page. POST: the volunteer's decision."""
    if request.method not in {"GET", "POST"}:
        return HttpResponse(status=405)
    form_errors = ""
    if request.method == "POST":
        rules.volunteer_require(request.user)
        draft = {key: request.POST.get(f"draft_{key}", "") for key in services.DRAFT_FIELDS}
        item_id = request.POST.get("item_id") or request.POST.get("other_item_id") or None
        try:
            services.review_submit(
                submission_id=pk,
                user=request.user,
                decision=request.POST.get("decision", ""),
                item_id=int(item_id) if item_id and str(item_id).isdigit() else None,
                draft=draft,
                comment=request.POST.get("comment", ""),
            )
        except services.ReviewConflict as exc:
            messages.warning(request, str(exc))
            return redirect("review:queue")
        except ValidationError as exc:
            form_errors = _errors(exc)
        else:
            messages.success(request, "Thank you, your review is recorded.")
            if request.POST.get("then") == "next":
                claim = services.queue_next(user=request.user)
                if claim is not None:
                    return redirect("review:review", pk=claim.submission_id)
            return redirect("review:queue")
    page = selectors.review_page(submission_id=pk, user=request.user)
    if page is None:
        raise Http404("No such submission.")
    context = {
        "page": page,
        "submission": page.submission,
        "decisions": ReviewDecision.choices,
        "draft_fields": [(key, key.replace("_", " ").capitalize()) for key in services.DRAFT_FIELDS],
        "form_errors": form_errors,
        "posted": request.POST if form_errors else {},
    }
    return _render(request, "review/review.html", context, status=400 if form_errors else 200)


@login_required
@require_GET
def proposals(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status", ProposalStatus.PENDING)
    context = {
        "proposals": list(selectors.proposals_list(user=request.user, status=status)[:100]),
        "escalated": list(selectors.escalated_list(user=request.user)[:50]),
        "status": status,
        "statuses": ProposalStatus.choices,
    }
    return _render(request, "review/proposals.html", context)


@login_required
@require_GET
def proposal_detail(request: HttpRequest, pk: int) -> HttpResponse:
    context = selectors.proposal_page(proposal_id=pk, user=request.user)
    if context is None:
        raise Http404("No such proposal.")
    return _render(request, "review/proposal_detail.html", context)


@login_required
@require_POST
def proposal_approve(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        specimen = services.proposal_approve(proposal_id=pk, user=request.user)
    except services.ReviewConflict as exc:
        messages.error(request, str(exc))
        return redirect("review:proposal_detail", pk=pk)
    except ValidationError as exc:
        raise Http404(_errors(exc)) from exc
    messages.success(request, f"Approved: specimen {specimen.record_id} is now in the catalogue.")
    return redirect(reverse("review:proposals"))


@login_required
@require_POST
def proposal_reject(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        services.proposal_reject(proposal_id=pk, user=request.user, reason=request.POST.get("reason", ""))
    except services.ReviewConflict as exc:
        messages.error(request, str(exc))
    except ValidationError as exc:
        messages.error(request, _errors(exc))
        return redirect("review:proposal_detail", pk=pk)
    else:
        messages.success(request, "Rejected: the submission is back in the volunteers' queue with your reason.")
        return redirect("review:proposals")
    return redirect("review:proposal_detail", pk=pk)


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    return _render(request, "review/dashboard.html", {"stats": selectors.dashboard_stats(user=request.user)})


@login_required
@require_GET
def history(request: HttpRequest, kind: str, pk: int) -> HttpResponse:
    """Curators: the review history of an item or a specimen (linked from their pages)."""
    if kind not in {"item", "specimen"}:
        raise Http404("No such history.")
    events = selectors.history_for(user=request.user, **{f"{kind}_id": pk})
    return _render(request, "review/history.html", {"events": events, "kind": kind, "pk": pk})
