"""Security headers on every response, and the client's address behind reverse proxies.

The Content-Security-Policy lets a page run only the app's own script files (htmx, served from
/static): an injected ``<script>`` or ``onerror=`` attribute does not run even if some template
forgot to escape. Styles may be inline because the progress bars set their width in a ``style``
attribute and htmx adds its indicator rules; CSS cannot run script.
"""
from flask import Flask, current_app
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


def security_headers(response):
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if current_app.config.get("APP_ENV") == "production":
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response


def init_app(app: Flask) -> None:
    app.config.setdefault("REMEMBER_COOKIE_SAMESITE", "Lax")
    app.after_request(security_headers)
    hops = app.config.get("TRUSTED_PROXIES", 0)
    if hops:
        # Behind a reverse proxy the client's address and scheme come from its X-Forwarded-*
        # headers; without this every login attempt would count against the proxy's address.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
