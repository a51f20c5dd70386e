from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select

from ..extensions import db
from ..text import storable
from .models import ROLES, User

MIN_PASSWORD = 8


class UserError(ValueError):
    """Input a user cannot be saved with; ``fields`` maps each bad form field to its message."""

    def __init__(self, fields: dict[str, str]):
        super().__init__(" ".join(fields.values()))
        self.fields = fields


def normalise_email(email: str) -> str:
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise UserError({"email": f"Not a valid email address: {exc}"}) from None


def _role_error(role: str) -> dict[str, str]:
    return {} if role in ROLES else {"role": f"Role must be one of {', '.join(ROLES)}."}


def save_user(email: str, password: str, role: str, *, replace: bool = True) -> tuple[User, bool]:
    """Create a user, or (when ``replace``) set the password and role of the one with this email."""
    errors = _role_error(role)
    try:
        email = normalise_email(email)
    except UserError as exc:
        errors.update(exc.fields)
    if len(password) < MIN_PASSWORD:
        errors["password"] = f"The password needs at least {MIN_PASSWORD} characters."
    if errors:
        raise UserError(errors)
    user = db.session.scalar(select(User).where(User.email == email))
    created = user is None
    if created:
        user = User(email=email, role=role)
        db.session.add(user)
    elif not replace:
        raise UserError({"email": f"There is already a user {email}."})
    elif not user.check_password(password):
        user.end_sessions()  # a new password logs out whoever had the old one
    user.role = role
    user.set_password(password)
    db.session.commit()
    return user, created


def change_user(user_id: int, by: User, *, role: str | None = None, active: bool | None = None) -> User:
    """An admin changes another user's role or lets them in or out.

    Nobody changes their own account here, so there is always an active admin left: the one acting.
    """
    user = db.session.get(User, user_id)
    if user is None:
        raise LookupError(f"no user {user_id}")
    if user.id == by.id:
        raise UserError({"user": "You cannot change your own role or deactivate yourself."})
    if role is not None:
        errors = _role_error(role)
        if errors:
            raise UserError(errors)
        user.role = role
    if active is not None:
        if user.active and not active:
            user.end_sessions()  # for good: reactivating does not bring them back
        user.active = active
    db.session.commit()
    return user


def authenticate(email: str, password: str) -> User | None:
    email = email.strip().lower()
    # No stored address has control characters, and PostgreSQL refuses to compare text with NUL.
    user = db.session.scalar(select(User).where(User.email == email)) if storable(email) else None
    if user is None:
        # Same work as a real check, so timing does not tell whether the account exists.
        User(password_hash=_DUMMY_HASH).check_password(password)
        return None
    # The password is checked for a deactivated account too, so it takes as long as a wrong one.
    correct = user.check_password(password)
    return user if correct and user.active else None


_DUMMY_HASH = "scrypt:32768:8:1$0000000000000000$" + "0" * 128
