from urllib.parse import urlsplit

from flask import Blueprint, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_required, logout_user

from .login import start_session
from .services import authenticate
from .throttle import RETRY_AFTER, THROTTLED, Throttled, count_attempt

bp = Blueprint("auth", __name__)

WRONG = "Wrong email or password."


def _safe_next(target: str | None) -> str:
    r"""Only follow ``next`` to a path on this site.

    Browsers read a backslash as a slash, skip extra slashes and drop tabs and newlines, so
    ``///evil.example``, ``/\evil.example`` and ``/\t/evil.example`` would all leave the site.
    """
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target \
            and target.isprintable() and not any(c.isspace() for c in target):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("events.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("events.index"))
    email = ""
    if request.method == "POST":
        email = request.form.get("email", "").strip()
        try:
            attempt = count_attempt(email)  # before the password is checked, so a burst cannot outrun it
        except Throttled:
            response = make_response(render_template("auth/login.html", error=THROTTLED, email=email), 429)
            response.headers["Retry-After"] = str(RETRY_AFTER)
            return response
        user = authenticate(email, request.form.get("password", ""))
        if user is not None:
            start_session(user, remember=bool(request.form.get("remember")))
            response = redirect(_safe_next(request.args.get("next")))
            attempt.succeeded(response)
            return response
        return render_template("auth/login.html", error=WRONG, email=email), 401
    return render_template("auth/login.html", error=None, email=email)


@bp.post("/logout")
@login_required
def logout():
    logout_user()
    flash("You are logged out.")
    return redirect(url_for("auth.login"))
