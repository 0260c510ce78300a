"""When a submission was decided (the retention clock), when retention removed its personal data, and the
daily django-q2 schedule that applies the retention (``identification.tasks.apply_retention``).

Submissions decided before this migration get their best known decision time: when they failed
(``processed_at``) or were last changed (``updated_at``, which resolving them set).
"""

from __future__ import annotations

from django.db import migrations, models
from django.db.models import F
from django.db.models.functions import Coalesce

SCHEDULE_NAME = "obverse-apply-retention"


def backfill_decided_at(apps, schema_editor):
    Submission = apps.get_model("identification", "Submission")
    Submission.objects.filter(status="failed", decided_at__isnull=True).update(
        decided_at=Coalesce(F("processed_at"), F("updated_at"))
    )
    Submission.objects.filter(status="resolved", decided_at__isnull=True).update(decided_at=F("updated_at"))


def add_schedule(apps, schema_editor):
    # update_or_create: re-running the migration (or a schedule edited in the admin) keeps one row.
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": "identification.tasks.apply_retention",
            "schedule_type": "D",  # Schedule.DAILY
            "repeats": -1,  # forever
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("identification", "0008_background_jobs"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.AddField(
            model_name="submission",
            name="decided_at",
            field=models.DateTimeField(
                blank=True,
                db_index=True,
                help_text="When it was resolved or failed: retention counts from here.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="submission",
            name="personal_data_removed_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When retention removed the raw photos and the requester's contact details.",
                null=True,
            ),
        ),
        migrations.RunPython(backfill_decided_at, migrations.RunPython.noop),
        migrations.RunPython(add_schedule, remove_schedule),
    ]
