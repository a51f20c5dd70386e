from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select

from ..extensions import db
from .models import ROLES, User

MIN_PASSWORD = 8


class UserError(ValueError):
    pass


def normalise_email(email: str) -> str:
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise UserError(f"Not a valid email address: {exc}") from None


def save_user(email: str, password: str, role: str) -> tuple[User, bool]:
    """Create a user, or set the password and role of the one with this email."""
    email = normalise_email(email)
    if role not in ROLES:
        raise UserError(f"Role must be one of {', '.join(ROLES)}.")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"The password needs at least {MIN_PASSWORD} characters.")
    user = db.session.scalar(select(User).where(User.email == email))
    created = user is None
    if created:
        user = User(email=email, role=role)
        db.session.add(user)
    user.role = role
    user.set_password(password)
    db.session.commit()
    return user, created


def authenticate(email: str, password: str) -> User | None:
    user = db.session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        # Same work as a real check, so timing does not tell whether the account exists.
        User(password_hash=_DUMMY_HASH).check_password(password)
        return None
    return user if user.active and user.check_password(password) else None


_DUMMY_HASH = "scrypt:32768:8:1$0000000000000000$" + "0" * 128
