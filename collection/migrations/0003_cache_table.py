"""Create the database cache table (shared by web and worker: the worker heartbeat lives there)."""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("collection", "0002_embedding_halfvec")]

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
