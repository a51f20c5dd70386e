"""Flask-Login wiring: who is logged in, and what an anonymous caller is told."""
from flask import Flask, jsonify, make_response, redirect, request, url_for

from ..extensions import db, login_manager
from ..routing import wants_json
from .models import User


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    # A deactivated user's open sessions (and remember-me cookies) end with their next request.
    user = db.session.get(User, int(user_id)) if user_id.isdigit() else None
    return user if user is not None and user.active else None


@login_manager.unauthorized_handler
def unauthorized():
    if wants_json():
        return jsonify(error="authentication required"), 401
    if request.headers.get("HX-Request"):
        # A poll from a page whose session ended: send the whole page to the login form.
        response = make_response("", 401)
        response.headers["HX-Redirect"] = url_for("auth.login")
        return response
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def init_app(app: Flask) -> None:
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to see that page."
    login_manager.session_protection = "strong"
