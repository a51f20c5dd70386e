"""Security headers on every response, and login attempts throttled per address and per account.

The Content-Security-Policy lets a page run only the app's own script files (htmx, served from
/static): an injected ``<script>`` or ``onerror=`` attribute does not run even if some template
forgot to escape. Styles may be inline because the progress bars set their width in a ``style``
attribute and htmx adds its indicator rules; CSS cannot run script.
"""
from flask import Flask, current_app, render_template, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from werkzeug.middleware.proxy_fix import ProxyFix

CSP = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
HSTS = "max-age=31536000; includeSubDomains"

# Only failed attempts count, so staff who type their password right are never held up. The
# address limit is generous because a school's staff often share one public address.
LOGIN_LIMITS = {"LOGIN_LIMIT_PER_ADDRESS": "30 per minute; 200 per hour",
                "LOGIN_LIMIT_PER_ACCOUNT": "5 per minute; 30 per hour"}
# The same words whether or not the account exists, so the answer tells nothing about it.
THROTTLED = "Too many failed login attempts. Wait a few minutes and try again."


def security_headers(response):
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if current_app.config.get("APP_ENV") == "production":
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response


def _account_key() -> str:
    return "account:" + request.form.get("email", "").strip().lower()


def _throttled(error: RateLimitExceeded):
    """The login form again, saying why; any other limit answers as the app's other errors do."""
    if request.endpoint != "auth.login":
        return error
    response = current_app.make_response(
        (render_template("auth/login.html", error=THROTTLED, email=request.form.get("email", "").strip()), 429))
    response.headers["Retry-After"] = "60"
    return response


def _failed_login(response) -> bool:
    return response.status_code == 401


def init_app(app: Flask) -> Limiter:
    """Call after the blueprints are registered: the login view is wrapped here."""
    for name, default in LOGIN_LIMITS.items():
        app.config.setdefault(name, default)
    app.config.setdefault("REMEMBER_COOKIE_SAMESITE", "Lax")
    app.after_request(security_headers)
    hops = app.config.get("TRUSTED_PROXIES", 0)
    if hops:
        # Behind a reverse proxy the client's address and scheme come from its X-Forwarded-*
        # headers; without this every login attempt would count against the proxy's address.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    # One limiter per app (tests build many), on the shared store so every web worker counts together.
    redis_url = app.config.get("REDIS_URL")
    limiter = Limiter(
        key_func=get_remote_address,
        storage_uri=redis_url or "memory://",
        key_prefix=f"{app.config['HUEY_NAME']}:login",
        strategy="moving-window",
        swallow_errors=True,  # Redis down: log in without throttling rather than not at all
        in_memory_fallback_enabled=bool(redis_url),
    )
    limiter.init_app(app)
    login = app.view_functions["auth.login"]
    for limit, key in ((app.config["LOGIN_LIMIT_PER_ADDRESS"], get_remote_address),
                       (app.config["LOGIN_LIMIT_PER_ACCOUNT"], _account_key)):
        login = limiter.limit(limit, key_func=key, methods=["POST"], deduct_when=_failed_login)(login)
    app.view_functions["auth.login"] = login
    app.register_error_handler(RateLimitExceeded, _throttled)
    app.extensions["school_limiter"] = limiter
    return limiter
