"""Development only: the messages the local SMTP server stored, as parents would see them."""
from flask import Blueprint, abort, current_app, render_template

from ..auth.decorators import admin_required

bp = Blueprint("dev", __name__, url_prefix="/dev")


@bp.before_request
def development_only():
    if current_app.config["APP_ENV"] == "production":
        abort(404)


@bp.get("/mailbox")
@admin_required
def mailbox():
    return render_template("dev/mailbox.html", messages=[])
