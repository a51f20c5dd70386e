"""Flask-Login wiring: who is logged in, and what an anonymous caller is told."""
import secrets

from flask import Flask, jsonify, make_response, redirect, request, session, url_for
from flask_login import login_user, user_loaded_from_cookie

from ..extensions import db, login_manager
from ..routing import wants_json
from .models import User


@login_manager.user_loader
def load_user(session_id: str) -> User | None:
    """The user of a session or remember-me cookie (``User.get_id``), while it is still valid.

    A deactivated user's sessions end with their next request; so does every session of a user
    whose password changed or who was deactivated since, even once reactivated.
    """
    user_id, _, version = session_id.partition(":")
    if not (user_id.isdigit() and version.isdigit()):
        return None  # including ids from before session versions: those sessions end once
    user = db.session.get(User, int(user_id))
    if user is None or not user.active or user.session_version != int(version):
        return None
    return user


def start_session(user: User, remember: bool = False, fresh: bool = True) -> None:
    """Log ``user`` in on a fresh session: nothing from before the login carries over (a session
    someone planted before it is not the one that gets logged in) and the session gets a new id."""
    session.clear()
    login_user(user, remember=remember, fresh=fresh)
    session["sid"] = secrets.token_urlsafe(16)


def _session_from_cookie(_app, user: User) -> None:
    """A remember-me cookie brought the user back: give them a whole session. Without the
    session-protection id that a login sets, "strong" protection would end it at the next request."""
    start_session(user, fresh=False)


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
    user_loaded_from_cookie.connect(_session_from_cookie, app)
