"""Admin pages: users and the queue dashboard."""
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from ..auth.decorators import admin_required
from ..auth.models import ROLES, User
from ..auth.services import UserError, change_user, save_user
from ..extensions import db
from .dashboard import dashboard

bp = Blueprint("admin", __name__, url_prefix="/admin")

ACTIVE = {"1": True, "0": False}


def _users_page(status: int = 200, errors: dict | None = None, values: dict | None = None,
                row_errors: dict | None = None):
    users = db.session.scalars(select(User).order_by(User.email)).all()
    return render_template("admin/users.html", users=users, roles=ROLES, errors=errors or {},
                           values=values or {"role": "staff"}, row_errors=row_errors or {}), status


@bp.get("/users")
@admin_required
def users():
    return _users_page()


@bp.post("/users")
@admin_required
def create_user():
    values = {"email": request.form.get("email", ""), "role": request.form.get("role", "")}
    try:
        user, _ = save_user(values["email"], request.form.get("password", ""), values["role"], replace=False)
    except UserError as exc:
        return _users_page(422, errors=exc.fields, values=values)
    flash(f"Created {user.role} {user.email}.")
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:user_id>")
@admin_required
def update_user(user_id: int):
    """Change another user's role (``role``) or let them in or out (``active`` = 1 or 0)."""
    raw_active = request.form.get("active")
    if raw_active is not None and raw_active not in ACTIVE:
        abort(400, "active must be 1 or 0")
    try:
        user = change_user(user_id, current_user, role=request.form.get("role") or None,
                           active=ACTIVE.get(raw_active))
    except LookupError:
        abort(404)
    except UserError as exc:
        return _users_page(422, row_errors={user_id: exc.fields})
    flash(f"{user.email} is now {'an active' if user.active else 'a deactivated'} {user.role}.")
    return redirect(url_for("admin.users"))


@bp.get("/queue")
@admin_required
def queue():
    return render_template("admin/queue.html", **dashboard())


@bp.get("/queue/panel")
@admin_required
def queue_panel():
    """What the dashboard polls every 2 s."""
    return render_template("admin/_queue.html", **dashboard())
