"""identification.retention: raw photos and contact details go OBVERSE_RETENTION_DAYS after the decision,
never before, never from a submission still open, and never what the catalogue or the history uses.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from identification import retention, services, sweep, tasks, uploads
from identification.models import Submission, SubmissionStatus
from review import services as rs
from review.models import Proposal
from tests.factories import claim_and_review, make_item, make_user, photo_upload, submit
from tests.samples import jpeg_with_gps

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fake_pipeline")]


def _sent(seed: int = 1, **kwargs) -> Submission:
    """A visitor's submission of a phone photo with GPS in its EXIF, processed by the (fake) worker."""
    photo = photo_upload(jpeg_with_gps(), name="phone.jpg")
    submission = submit(seed, files=[photo], client_ip="203.0.113.7", notes="Bought at a fair.", **kwargs)
    services.submission_process(submission_id=submission.pk)
    return Submission.objects.get(pk=submission.pk)


def _approved(curator) -> tuple[Submission, Proposal]:
    item = make_item()
    submission = _sent()
    for name in ("reviewer1", "reviewer2"):
        claim_and_review(submission, make_user(name), item=item)
    proposal = Proposal.objects.get(submission=submission)
    rs.proposal_approve(proposal_id=proposal.pk, user=curator)
    return Submission.objects.get(pk=submission.pk), Proposal.objects.get(pk=proposal.pk)


def _decided_days_ago(submission: Submission, days: float) -> None:
    Submission.objects.filter(pk=submission.pk).update(decided_at=timezone.now() - timedelta(days=days))


def _raw_folder(submission: Submission) -> Path:
    return Path(uploads.private_uploads().path(str(submission.pk)))


def _derived_files(submission: Submission) -> list[str]:
    return [f.path for image in submission.images.all() for f in (image.original, image.cutout, image.upright) if f]


class TestTheDecisionStartsTheClock:
    def test_approval_failure_and_the_sweep_set_decided_at_and_a_rejection_does_not(self, curator):
        submission, _ = _approved(curator)
        assert submission.status == SubmissionStatus.RESOLVED and submission.decided_at is not None

        failed = submit(2)
        services.submission_fail(submission_id=failed.pk, reason="Not a coin.")
        assert Submission.objects.get(pk=failed.pk).decided_at is not None

        stuck = submit(3)
        Submission.objects.filter(pk=stuck.pk).update(
            status=SubmissionStatus.PROCESSING,
            attempts=settings.OBVERSE_PROCESSING_MAX_ATTEMPTS,
            processing_started_at=timezone.now() - timedelta(hours=1),
        )
        sweep.submission_sweep_stuck()
        assert Submission.objects.get(pk=stuck.pk).decided_at is not None

        item = make_item()
        turned_down = _sent(4)
        for name in ("reviewer3", "reviewer4"):
            claim_and_review(turned_down, make_user(name), item=item)
        rs.proposal_reject(proposal_id=Proposal.objects.get(submission=turned_down).pk, user=curator, reason="No.")
        assert Submission.objects.get(pk=turned_down.pk).decided_at is None  # back in the queue: not decided


class TestRetentionApply:
    def test_an_approved_submission_loses_its_raw_photo_and_contact_details_after_the_period(self, curator):
        submission, proposal = _approved(curator)
        raw = _raw_folder(submission)
        assert raw.is_dir() and any(raw.iterdir())
        derived = _derived_files(submission)
        catalogue = [image.image.path for image in proposal.specimen.images.all()]
        _decided_days_ago(submission, settings.OBVERSE_RETENTION_DAYS + 1)

        report = retention.retention_apply()

        assert report.cleared == [submission.pk]
        submission.refresh_from_db()
        assert not raw.exists()
        assert (submission.requester_name, submission.requester_email, submission.client_ip) == ("", "", None)
        assert submission.personal_data_removed_at is not None
        assert [image.upload_path for image in submission.images.all()] == [""]
        # What the site shows, the history and training use, and the catalogue's own copy all stay.
        assert derived and all(os.path.isfile(path) for path in derived)
        assert catalogue and all(os.path.isfile(path) for path in catalogue)
        assert submission.notes == "Bought at a fair." and submission.reviews.count() == 2
        assert client_can_see_the_specimen(proposal)

    def test_nothing_goes_before_the_period_ends(self, curator):
        submission, _ = _approved(curator)
        _decided_days_ago(submission, settings.OBVERSE_RETENTION_DAYS - 1)
        assert retention.retention_apply().cleared == []
        submission.refresh_from_db()
        assert _raw_folder(submission).is_dir() and submission.requester_email == "ada@example.org"

    def test_the_period_is_a_setting(self, settings, curator):
        settings.OBVERSE_RETENTION_DAYS = 7
        submission, _ = _approved(curator)
        _decided_days_ago(submission, 8)
        assert retention.retention_apply().cleared == [submission.pk]

    def test_a_failed_submission_is_cleared_too(self):
        failed = submit(5, client_ip="203.0.113.9")
        services.submission_fail(submission_id=failed.pk, reason="Not a coin.")
        _decided_days_ago(failed, settings.OBVERSE_RETENTION_DAYS + 1)
        assert retention.retention_apply().cleared == [failed.pk]
        assert not _raw_folder(failed).exists()

    @pytest.mark.parametrize(
        "status",
        [
            SubmissionStatus.AWAITING_REVIEW,
            SubmissionStatus.IN_REVIEW,
            SubmissionStatus.NEEDS_EXPERT,
            SubmissionStatus.PROPOSED,
            SubmissionStatus.RECEIVED,
        ],
    )
    def test_a_submission_still_open_keeps_everything_however_old(self, status):
        submission = _sent(6)
        long_ago = timezone.now() - timedelta(days=365)
        Submission.objects.filter(pk=submission.pk).update(status=status, created_at=long_ago, updated_at=long_ago)
        assert retention.retention_apply().cleared == []
        submission.refresh_from_db()
        assert _raw_folder(submission).is_dir() and submission.requester_email == "ada@example.org"
        assert submission.client_ip == "203.0.113.7"

    def test_a_second_run_finds_nothing_more(self, curator):
        submission, _ = _approved(curator)
        _decided_days_ago(submission, settings.OBVERSE_RETENTION_DAYS + 1)
        assert retention.retention_apply().cleared == [submission.pk]
        assert retention.retention_apply().cleared == []

    def test_a_folder_that_cannot_be_removed_leaves_the_row_for_the_next_run(self, curator, monkeypatch):
        submission, _ = _approved(curator)
        _decided_days_ago(submission, settings.OBVERSE_RETENTION_DAYS + 1)

        def refuse(path, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(retention.shutil, "rmtree", refuse)
        with pytest.raises(PermissionError):
            retention.retention_apply()
        submission.refresh_from_db()
        assert submission.personal_data_removed_at is None and submission.requester_email == "ada@example.org"
        monkeypatch.undo()
        assert retention.retention_apply().cleared == [submission.pk]


class TestOrphanFolders:
    def _folder(self, name: str, *, days_old: float) -> Path:
        folder = Path(settings.OBVERSE_PRIVATE_UPLOADS) / name
        folder.mkdir(parents=True)
        (folder / "0.upload").write_bytes(jpeg_with_gps())
        then = time.time() - days_old * 86400
        os.utime(folder, (then, then))
        return folder

    def test_old_folders_of_deleted_submissions_go_and_others_stay(self):
        kept = _sent(7)
        deleted = _sent(8)
        deleted_folder = _raw_folder(deleted)
        Submission.objects.filter(pk=deleted.pk).delete()  # as the admin deletes it: the files stayed behind
        then = time.time() - 2 * 86400
        os.utime(deleted_folder, (then, then))
        fresh = self._folder(str(uuid.uuid4()), days_old=0)  # a submission being stored right now
        other = self._folder("not-a-submission", days_old=10)

        report = retention.retention_apply()

        assert report.orphans == [deleted_folder.name]
        assert not deleted_folder.exists()
        assert _raw_folder(kept).is_dir() and fresh.is_dir() and other.is_dir()


class TestTheCommandAndTheSchedule:
    def test_a_dry_run_says_what_would_go_and_changes_nothing(self, curator, capsys):
        submission, _ = _approved(curator)
        _decided_days_ago(submission, settings.OBVERSE_RETENTION_DAYS + 1)
        call_command("apply_retention", "--dry-run")
        out = capsys.readouterr().out
        assert "would clear 1 submissions" in out and str(submission.pk) in out
        assert _raw_folder(submission).is_dir()
        call_command("apply_retention")
        assert "cleared 1 submissions" in capsys.readouterr().out
        assert not _raw_folder(submission).exists()

    def test_the_task_applies_it(self, curator):
        submission, _ = _approved(curator)
        _decided_days_ago(submission, settings.OBVERSE_RETENTION_DAYS + 1)
        assert tasks.apply_retention().startswith("cleared 1 submissions")

    def test_a_migration_schedules_it_daily(self):
        schedule = Schedule.objects.get(name="obverse-apply-retention")
        assert schedule.func == "identification.tasks.apply_retention"
        assert schedule.schedule_type == Schedule.DAILY and schedule.repeats < 0


def client_can_see_the_specimen(proposal: Proposal) -> bool:
    from django.test import Client

    response = Client().get(proposal.specimen.get_absolute_url())
    return response.status_code == 200 and proposal.specimen.record_id in response.content.decode()
