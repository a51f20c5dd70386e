"""The personal link's token: the recipient's row, signed with the app's secret.

Nothing is stored for it, so every email of a batch gets its link for the price of one HMAC, and a
token cannot be guessed or altered: a bad signature reads as no token at all.
"""
from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer

SALT = "family-notice"


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=SALT)


def signer():
    """A function (job id, notification id) -> token, built once for many recipients."""
    dumps = _serializer().dumps
    return lambda job_id, notification_id: dumps([job_id, notification_id])


def notice_token(job_id: int, notification_id: int) -> str:
    return signer()(job_id, notification_id)


def read_token(token: str) -> tuple[int, int] | None:
    """(job id, notification id), or None for a token this app did not sign."""
    try:
        data = _serializer().loads(token)
    except BadSignature:
        return None
    if (isinstance(data, list) and len(data) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in data)):
        return data[0], data[1]
    return None
