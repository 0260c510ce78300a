from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("collection", "0006_specimen_image_credit_category_labels"),
        ("identification", "0009_submission_decided_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="submission",
            name="idempotency_key",
            field=models.UUIDField(blank=True, editable=False, null=True, unique=True),
        ),
        migrations.AddField(
            model_name="submission",
            name="photo_credit",
            field=models.CharField(blank=True, help_text="The name to credit, when published.", max_length=200),
        ),
        migrations.AddField(
            model_name="submission",
            name="photo_licence",
            field=models.CharField(
                choices=[("cc-by-4.0", "CC BY 4.0"), ("cc0-1.0", "CC0 1.0"), ("none", "Do not publish")],
                default="none",
                max_length=20,
            ),
        ),
    ]
