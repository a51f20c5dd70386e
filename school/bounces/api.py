"""Suppressed addresses in the JSON API: ``GET /api/suppressions`` and ``DELETE /api/suppressions/<address>``."""
from flask import Blueprint, g, jsonify

from ..auth.tokens import token_required
from ..extensions import db
from . import suppressions

bp = Blueprint("bounces_api", __name__, url_prefix="/api/suppressions")


@bp.get("")
@token_required(admin=True)
def index():
    """Every address the fan-out leaves out because it bounced, with the reason and since when."""
    found = suppressions.active()
    return jsonify(suppressions=[suppressions.to_json(s) for s in found], total=len(found))


@bp.delete("/<path:address>")
@token_required(admin=True)
def lift(address: str):
    if not suppressions.lift(address, f"lifted by {g.api_user.email}"):
        db.session.rollback()
        return jsonify(error=f"{address} is not suppressed"), 404
    db.session.commit()
    return jsonify(email=address.strip().lower(), lifted=True)
