"""Admin pages: users and the queue dashboard."""
from flask import Blueprint, render_template

from ..auth.decorators import admin_required
from ..ops.dashboard import dashboard

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("/users")
@admin_required
def users():
    from sqlalchemy import select

    from ..auth.models import User
    from ..extensions import db

    return render_template("admin/users.html", users=db.session.scalars(select(User).order_by(User.email)).all())


@bp.get("/queue")
@admin_required
def queue():
    return render_template("admin/queue.html", **dashboard())


@bp.get("/queue/panel")
@admin_required
def queue_panel():
    """What the dashboard polls every 2 s."""
    return render_template("admin/_queue.html", **dashboard())
