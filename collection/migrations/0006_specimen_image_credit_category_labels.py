from django.db import migrations, models


def clean_hierarchical_labels(apps, schema_editor):
    """ "Roman--Imperial--Antonines" → "Roman › Imperial › Antonines", as imports now write them.

    The slug does not change, so links and a later re-import still find the concept.
    """
    Concept = apps.get_model("collection", "Concept")
    for concept in Concept.objects.filter(label__contains="--"):
        label = " ".join(concept.label.split())
        concept.label = " › ".join(part.strip() for part in label.split("--"))[:255]
        concept.save(update_fields=["label"])


class Migration(migrations.Migration):
    dependencies = [
        ("collection", "0005_image_tiles"),
    ]

    operations = [
        migrations.AddField(
            model_name="specimen",
            name="image_credit",
            field=models.CharField(
                blank=True,
                help_text="Who made the images, as they asked to be credited (a contributor).",
                max_length=200,
            ),
        ),
        migrations.RunPython(clean_hierarchical_labels, migrations.RunPython.noop),
    ]
