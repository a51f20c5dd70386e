"""Development only: the messages the local SMTP server stored, as parents would see them."""
from flask import Blueprint, Response, abort, current_app, render_template

from ..auth.decorators import admin_required
from ..routing import page_arg
from . import mailbox as store

bp = Blueprint("dev", __name__, url_prefix="/dev")

PER_PAGE = 50


@bp.before_request
def development_only():
    if current_app.config["APP_ENV"] == "production":
        abort(404)


@bp.get("/mailbox")
@admin_required
def mailbox():
    page = store.listing(store.mailbox_dir(current_app.config), page=page_arg(),
                         per_page=PER_PAGE)
    return render_template("dev/mailbox.html", listing=page)


@bp.get("/mailbox/<name>")
@admin_required
def message(name: str):
    opened = store.open_message(store.mailbox_dir(current_app.config), name)
    if opened is None:
        abort(404, "No such message in the mailbox.")
    return render_template("dev/message.html", message=opened)


@bp.get("/mailbox/<name>/source")
@admin_required
def source(name: str):
    content = store.raw(store.mailbox_dir(current_app.config), name)
    if content is None:
        abort(404, "No such message in the mailbox.")
    # text/plain and nosniff: the source is shown, never interpreted as a page.
    return Response(content, mimetype="text/plain", headers={"X-Content-Type-Options": "nosniff"})
