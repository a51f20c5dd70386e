"""Bearer tokens for the JSON API."""
from functools import wraps

from flask import g, jsonify, request
from sqlalchemy import select, update

from ..extensions import db
from ..timeutil import utcnow
from .models import ApiToken, User, hash_token


def user_for_token(token: str) -> User | None:
    row = db.session.execute(
        select(User).join(ApiToken).where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
    ).scalar_one_or_none()
    return row if row is not None and row.active else None


def bearer_token() -> str | None:
    """The token of the request's ``Authorization: Bearer <token>`` header, if it has one."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def token_required(admin: bool = False):
    """The caller must send ``Authorization: Bearer <token>``; the user is in ``g.api_user``."""

    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            token = bearer_token()
            user = user_for_token(token) if token else None
            if user is None:
                response = jsonify(error="a valid API token is required (Authorization: Bearer <token>)")
                response.headers["WWW-Authenticate"] = "Bearer"
                return response, 401
            if admin and not user.is_admin:
                return jsonify(error="this needs an admin's token"), 403
            g.api_user = user
            return view(*args, **kwargs)

        return wrapped

    return decorator


def revoke(token_or_email: str) -> int:
    """Revoke the token given, or every active token of the user with that email."""
    value = token_or_email.strip()
    active = ApiToken.revoked_at.is_(None)
    if "@" in value:
        user_ids = select(User.id).where(User.email == value.lower())
        where = (ApiToken.user_id.in_(user_ids), active)
    else:
        where = (ApiToken.token_hash == hash_token(value), active)
    result = db.session.execute(update(ApiToken).where(*where).values(revoked_at=utcnow()))
    db.session.commit()
    return result.rowcount
