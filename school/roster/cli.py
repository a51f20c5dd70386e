"""``flask --app app import-roster PATH [--dry-run]``."""
from pathlib import Path

import click
from flask.cli import with_appcontext

from .importer import import_roster


@click.command("import-roster")
@with_appcontext
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Report what would change and write nothing.")
def import_roster_command(path: Path, dry_run: bool) -> None:
    """Import a OneRoster 1.1 bundle (a .zip, or a folder with manifest.csv) or the simple CSV."""
    summary = import_roster(path, dry_run=dry_run)
    for line in summary.lines():
        click.echo(line)
    if summary.refused:
        raise click.exceptions.Exit(1)
