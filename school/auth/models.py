"""Staff who log in, and the API tokens they hold."""
import hashlib
import secrets
from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import DateTime, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from ..extensions import db
from ..timeutil import utcnow

ROLES = ("admin", "staff")


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(10), default="staff")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Part of every session's and remember-me cookie's user id (get_id): raising it ends them all.
    session_version: Mapped[int] = mapped_column(default=0, server_default="0")

    tokens: Mapped[list["ApiToken"]] = relationship(back_populates="user", cascade="all, delete-orphan")

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def get_id(self) -> str:
        """What Flask-Login keeps in the session and the remember-me cookie: id and session version."""
        return f"{self.id}:{self.session_version}"

    def end_sessions(self) -> None:
        """Every session and remember-me cookie issued so far stops working at its next request."""
        self.session_version += 1

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive users
        return self.active


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(db.Model):
    """A bearer token; only its SHA-256 is stored, so a leaked database leaks no token."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship(back_populates="tokens")

    @classmethod
    def issue(cls, user: User) -> tuple["ApiToken", str]:
        token = "sk_" + secrets.token_urlsafe(32)
        return cls(user=user, token_hash=hash_token(token), prefix=token[:10]), token
