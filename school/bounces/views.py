"""The providers' webhooks: ``POST /webhooks/bounces/<ses|postmark>``, authenticated by
BOUNCE_WEBHOOK_SECRET in the URL (``…/<secret>`` or a URL's user:password), or in the
``X-Webhook-Secret`` header. No session, so no CSRF token: the secret is the capability."""
import hmac
import json
import logging

from flask import Blueprint, current_app, jsonify, request

from ..notify.delivery import DATABASE_DOWN
from .webhooks import PROVIDERS, WebhookError

log = logging.getLogger(__name__)

bp = Blueprint("bounces", __name__, url_prefix="/webhooks/bounces")


def _refusal():
    """Why the request may not in (a response), or None when its secret is right."""
    expected = current_app.config["BOUNCE_WEBHOOK_SECRET"]
    if not expected:
        return jsonify(error="bounce webhooks are off: BOUNCE_WEBHOOK_SECRET is not set"), 403
    auth = request.authorization
    given = (request.view_args.get("secret") or request.headers.get("X-Webhook-Secret")
             or (auth.password if auth is not None and auth.type == "basic" else None))
    if not given:
        response = jsonify(error="this webhook needs its secret (in the URL or the X-Webhook-Secret header)")
        response.headers["WWW-Authenticate"] = 'Basic realm="bounces"'
        return response, 401
    if not hmac.compare_digest(given.encode(), expected.encode()):
        log.warning("bounce webhook: a request with the wrong secret from %s", request.remote_addr)
        return jsonify(error="wrong secret"), 403
    return None


@bp.post("/<any(ses, postmark):provider>")
@bp.post("/<any(ses, postmark):provider>/<secret>")
def webhook(provider: str, secret: str | None = None):
    refused = _refusal()
    if refused is not None:
        return refused
    try:  # SNS posts JSON as text/plain: read the body whatever its type says
        body = json.loads(request.get_data(cache=False) or b"")
    except (ValueError, RecursionError):
        return jsonify(error="the body is not JSON"), 400
    if not isinstance(body, dict):
        return jsonify(error="the body is not a JSON object"), 400
    try:
        outcomes = PROVIDERS[provider](body)
    except WebhookError as exc:
        return jsonify(error=str(exc)), 400
    except DATABASE_DOWN as exc:  # the provider sends it again later
        log.warning("bounce webhook: the database is unreachable (%s)", exc)
        return jsonify(error="the database is unreachable; try again later"), 503
    return jsonify(handled=sum(o.handled for o in outcomes), ignored=sum(not o.handled for o in outcomes),
                   outcomes=[str(o) for o in outcomes])
