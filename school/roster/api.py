"""The roster's JSON API: ``POST /api/roster/imports`` (multipart) and ``GET /api/roster/imports/<id>``."""
from flask import Blueprint, g, jsonify, request, url_for

from ..auth.tokens import token_required
from ..extensions import db
from . import imports
from .models import RosterImport
from .tasks import run_import

bp = Blueprint("roster_api", __name__, url_prefix="/api/roster")

TRUE, FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def _json(record: RosterImport) -> dict:
    data = imports.progress(record).to_json()
    data["url"] = url_for("roster_api.status", import_id=record.id, _external=True)
    data["created_at"] = record.created_at.isoformat()
    data["created_by"] = record.created_by.email if record.created_by else None
    return data


@bp.post("/imports")
@token_required(admin=True)
def start():
    upload = request.files.get("file")
    fields = {}
    if upload is None or not upload.filename:
        fields["file"] = "send the bundle as a multipart file field named 'file'"
    dry_run = request.form.get("dry_run", "false").strip().lower()
    if dry_run not in TRUE + FALSE:
        fields["dry_run"] = "use true or false"
    data = b"" if fields else upload.read()
    if not fields and not data:
        fields["file"] = "the file is empty"
    if fields:
        return jsonify(error="invalid roster import", fields=fields), 422
    record = imports.start(upload.filename, data, dry_run in TRUE, g.api_user, run_import)
    response = jsonify(_json(record))
    response.headers["Location"] = url_for("roster_api.status", import_id=record.id, _external=True)
    return response, 202


@bp.get("/imports/<int:import_id>")
@token_required(admin=True)
def status(import_id: int):
    record = db.session.get(RosterImport, import_id)
    if record is None:
        return jsonify(error=f"no roster import {import_id}"), 404
    return jsonify(_json(record))
