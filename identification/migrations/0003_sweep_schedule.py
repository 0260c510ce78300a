"""Schedule the sweep of stuck submissions in django-q2 (every five minutes, forever)."""

from __future__ import annotations

from django.db import migrations

SCHEDULE_NAME = "obverse-sweep-submissions"


def add_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    # update_or_create: re-running the migration (or a schedule edited in the admin) keeps one row.
    Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": "identification.tasks.sweep_submissions",
            "schedule_type": "I",  # Schedule.MINUTES
            "minutes": 5,
            "repeats": -1,  # forever
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("identification", "0002_review"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
