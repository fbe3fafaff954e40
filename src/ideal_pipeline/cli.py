"""`kedro run` with a user's mistake ending in one clear message instead of a traceback.

Kedro loads this module's `cli` group and lets its commands replace the built-in ones. `run` is
Kedro's own command (same options, same behaviour); only the way it fails changes: a `UserError`
(and the configuration and dataset errors Kedro raises for a wrong `--env` or a missing file)
prints `Error: <message>` on stderr and exits with status 2. `IDEAL_TRACEBACK=1` shows the
traceback as well.
"""

from __future__ import annotations

import os
import sys

import click
from kedro.config import MissingConfigException
from kedro.framework.cli.project import run as kedro_run
from kedro.io import DatasetError

from ideal_pipeline.errors import UserError

TRACEBACK_ENV = "IDEAL_TRACEBACK"
EXPECTED = (UserError, MissingConfigException, DatasetError, FileNotFoundError)


class ClearErrors(click.Command):
    """A click command whose expected errors end in their message alone."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EXPECTED as error:
            if os.environ.get(TRACEBACK_ENV):
                raise
            message = str(error).strip() or type(error).__name__
            click.echo(f"Error: {message}", err=True)
            click.echo(f"({type(error).__name__}; {TRACEBACK_ENV}=1 shows the traceback)", err=True)
            sys.exit(2)


@click.group(name="ideal_pipeline")
def cli() -> None:
    """Project commands."""


cli.add_command(
    ClearErrors(
        name=kedro_run.name,
        params=kedro_run.params,
        callback=kedro_run.callback,
        help=kedro_run.help,
        short_help=kedro_run.short_help,
    )
)
