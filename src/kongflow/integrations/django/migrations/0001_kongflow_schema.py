"""kongflow's schema in the project's database: its tables, functions and views, at the version
of the installed kongflow (later versions are applied after every `manage.py migrate`)."""

from __future__ import annotations

from typing import Any

from django.db import migrations


def apply_schema(apps: Any, schema_editor: Any) -> None:
    from kongflow.integrations.django.client import jobs

    jobs(schema_editor.connection.alias).migrate()


class Migration(migrations.Migration):
    initial = True
    dependencies = ()
    operations = (
        # Reversing leaves the schema, and the jobs in it, where they are.
        migrations.RunPython(apply_schema, migrations.RunPython.noop, elidable=False),
    )
