"""Health endpoints: no login for liveness and readiness."""
from flask import Blueprint, jsonify

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    """The process is up; nothing else is touched."""
    return jsonify(status="ok")
