"""Health endpoints: no login for liveness and readiness; the details need an admin or an API token."""
from functools import wraps

from flask import Blueprint, Response, jsonify, request
from flask_login import current_user

from ..auth.tokens import user_for_token
from ..ops import exposition, stats
from . import checks

bp = Blueprint("health", __name__)


def admin_or_token(view):
    """An admin's session, or any valid ``Authorization: Bearer`` token (what a Prometheus scrape sends)."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            if user_for_token(token.strip()) is None:
                return _refuse("that API token is not valid", 401)
        elif not current_user.is_authenticated:
            return _refuse("log in as an admin or send Authorization: Bearer <token>", 401)
        elif not current_user.is_admin:
            return _refuse("this needs an admin", 403)
        return view(*args, **kwargs)

    return wrapped


def _refuse(message: str, status: int):
    response = jsonify(error=message)
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response, status


@bp.get("/health")
def health():
    """The process is up; nothing else is touched."""
    return jsonify(status="ok")


@bp.get("/health/ready")
def ready():
    ok, body = checks.readiness()
    return jsonify(body), 200 if ok else 503


@bp.get("/health/queue")
@admin_or_token
def queue():
    try:
        return jsonify(stats.queue_health())
    except Exception as exc:  # the queue's backend is down: say so, as readiness would
        return jsonify(error="the queue cannot be read: " + checks.scrub(f"{type(exc).__name__}: {exc}")), 503


@bp.get("/health/cache")
@admin_or_token
def cache():
    return jsonify(stats.cache_stats())


@bp.get("/metrics")
@admin_or_token
def prometheus():
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(exposition.exposition(), content_type=CONTENT_TYPE_LATEST)
