"""Health endpoints: no login for liveness and readiness; the details need an admin or an API token."""
from functools import wraps

from flask import Blueprint, Response, jsonify
from flask_login import current_user

from ..auth.tokens import bearer_token, user_for_token
from ..ops import exposition, stats
from . import checks

bp = Blueprint("health", __name__)


def _is_insider() -> bool:
    """An admin's session or any valid API token: who may see hosts, ports, paths and errors."""
    token = bearer_token()
    if token:
        return user_for_token(token) is not None
    return current_user.is_authenticated and current_user.is_admin


def admin_or_token(view):
    """An admin's session, or any valid ``Authorization: Bearer`` token (what a Prometheus scrape sends)."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        token = bearer_token()
        if token:
            if user_for_token(token) is None:
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
    """Anyone (a load balancer) gets the status and what fails; admins and tokens get the details."""
    # The checks first: looking up a token opens a transaction that, on SQLite, would hold the
    # lock the database check waits for.
    ok, body = checks.readiness()
    return jsonify(body if _is_insider() else checks.summary(body)), 200 if ok else 503


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
