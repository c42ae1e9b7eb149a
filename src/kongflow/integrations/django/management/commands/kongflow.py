"""`manage.py kongflow ...`: every kongflow command (worker, jobs, queues, cleanup, migrate, ...)
on the project's database and schema; `worker` runs the tasks registered with `@task` unless
given `--tasks`."""

from __future__ import annotations

import argparse
import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from kongflow.integrations.django.client import database_url
from kongflow.integrations.django.conf import kongflow_settings

REGISTRY = "kongflow.integrations.django.registry:TASKS"


class Command(BaseCommand):
    help = "Run a kongflow command on this project's database, e.g. `kongflow worker`."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("arguments", nargs=argparse.REMAINDER, help="kongflow's arguments")

    def run_from_argv(self, argv: list[str]) -> None:
        """The arguments go to kongflow as they are (Django's parser would take --help, -v...)."""
        self.execute(arguments=argv[2:], skip_checks=True, no_color=False, force_color=False)

    def handle(self, *args: Any, **options: Any) -> None:
        from kongflow.cli import app

        arguments = list(options["arguments"])
        if arguments[:1] == ["worker"] and "--tasks" not in arguments:
            arguments += ["--tasks", REGISTRY]
        config = kongflow_settings()
        os.environ["DATABASE_URL"] = database_url(config.database)
        os.environ["KONGFLOW_SCHEMA"] = config.schema
        try:
            app(args=arguments, prog_name="manage.py kongflow", standalone_mode=True)
        except SystemExit as exit:
            if exit.code not in (0, None):
                code = exit.code if isinstance(exit.code, int) else 1
                raise CommandError(f"kongflow exited with {exit.code}", returncode=code) from None
