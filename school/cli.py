"""``flask --app app …`` commands: seed-demo, import-roster, create-user, create-token, revoke-token."""
import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy import select

from .auth.models import ROLES, ApiToken, User
from .bounces.cli import COMMANDS as BOUNCE_COMMANDS
from .extensions import db
from .roster.cli import import_roster_command
from .roster.seed import RosterExists, seed_demo


@click.command("seed-demo")
@with_appcontext
@click.option("--students", type=click.IntRange(1, 1_000_000), default=500, show_default=True)
@click.option("--reset", is_flag=True, help="Replace the roster that is there.")
def seed_demo_command(students: int, reset: bool) -> None:
    """Write a deterministic demo school with STUDENTS students."""
    try:
        summary = seed_demo(students, reset=reset)
    except RosterExists as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Seeded {summary.classes} classes, {summary.students} students, "
               f"{summary.guardians} guardians and {summary.teachers} teachers.")


@click.command("create-user")
@with_appcontext
@click.argument("email")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--role", type=click.Choice(ROLES), default="staff", show_default=True)
def create_user_command(email: str, password: str, role: str) -> None:
    """Create a staff user (or reset the password and role of one that exists)."""
    from .auth.services import UserError, save_user

    try:
        user, created = save_user(email, password, role)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'Created' if created else 'Updated'} {user.role} {user.email}.")


@click.command("create-token")
@with_appcontext
@click.argument("email")
def create_token_command(email: str) -> None:
    """Print a new API token for EMAIL (shown once; only its hash is stored)."""
    user = db.session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise click.ClickException(f"No user {email}; create it with create-user first.")
    token, secret = ApiToken.issue(user)
    db.session.add(token)
    db.session.commit()
    click.echo(secret)


@click.command("revoke-token")
@with_appcontext
@click.argument("token_or_email")
def revoke_token_command(token_or_email: str) -> None:
    """Revoke one token (give the token) or every token of a user (give the email)."""
    from .auth.tokens import revoke

    revoked = revoke(token_or_email)
    if not revoked:
        raise click.ClickException("No matching active token.")
    click.echo(f"Revoked {revoked} token(s).")


def init_app(app: Flask) -> None:
    for command in (seed_demo_command, import_roster_command, create_user_command, create_token_command,
                    revoke_token_command, *BOUNCE_COMMANDS):
        app.cli.add_command(command)
