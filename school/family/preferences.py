"""Each email address's choices: normal notices on or off, and its language."""
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from ..extensions import db
from ..i18n import LANGUAGES
from ..timeutil import utcnow
from .models import AddressPreference


def _key(email: str) -> str:
    return email.strip().lower()


def preference(email: str) -> AddressPreference | None:
    return db.session.scalar(select(AddressPreference).where(AddressPreference.email == _key(email)))


def _preference_for(email: str) -> AddressPreference:
    """The address's row, made if missing; two clicks at once make one row, not an error."""
    dialect_insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    db.session.execute(dialect_insert(AddressPreference).values(email=_key(email), updated_at=utcnow())
                       .on_conflict_do_nothing(index_elements=["email"]))
    return preference(email)


def opted_out_among(emails: list[str]) -> set[str]:
    """The addresses of ``emails`` (lower-cased) that opted out of normal notices."""
    if not emails:
        return set()
    return set(db.session.scalars(select(AddressPreference.email).where(
        AddressPreference.email.in_({_key(e) for e in emails}), AddressPreference.opted_out_at.is_not(None))))


def languages_among(emails: list[str]) -> dict[str, str]:
    """The language each address of ``emails`` (lower-cased) chose, for those that chose one."""
    if not emails:
        return {}
    return dict(db.session.execute(select(AddressPreference.email, AddressPreference.language).where(
        AddressPreference.email.in_({_key(e) for e in emails}), AddressPreference.language.is_not(None))).all())


def set_normal_notices(email: str, wanted: bool) -> None:
    """Turn normal notices on or off for the address; urgent notices are always sent."""
    found = _preference_for(email)
    if wanted:
        found.opted_out_at = None
    elif found.opted_out_at is None:
        found.opted_out_at = utcnow()
    db.session.commit()


def set_language(email: str, language: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}")
    _preference_for(email).language = language
    db.session.commit()
