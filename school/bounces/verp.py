"""The envelope sender of each message (VERP): ``bounces+<tag>@domain``, the tag naming the ledger
row the message was sent for, so a bounce says whom it is about even when its body does not.

The tag is the row's id and a short HMAC of it under the app's secret: nothing is stored, and a
tag nobody signed (a forged bounce) reads as no tag. It is lower-case letters and digits only,
because some mail servers change the case of the part before the ``@``.
"""
import base64
import hashlib
import hmac
import re

from flask import current_app

SALT = b"bounce-address:"
MAC_CHARS = 10  # 50 bits: guessing one takes about 10^15 forged bounces
TAG = re.compile(r"^([0-9a-z]{1,13})-([a-z2-7]{%d})$" % MAC_CHARS)


def _mac(key: bytes, notification_id: int) -> str:
    digest = hmac.new(key, SALT + str(notification_id).encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:MAC_CHARS]


def _key() -> bytes:
    return str(current_app.config["SECRET_KEY"]).encode()


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
        if not number:
            return text


def addresser():
    """A function notification id -> envelope sender, built once for many recipients."""
    key = _key()
    local, _, domain = current_app.config["MAIL_BOUNCE_ADDRESS"].rpartition("@")
    return lambda notification_id: f"{local}+{_base36(notification_id)}-{_mac(key, notification_id)}@{domain}"


def bounce_address(notification_id: int) -> str:
    return addresser()(notification_id)


def read_address(address: str) -> int | None:
    """The notification id an address of ours is tagged with; None for anything else (another
    address, no tag, a tag we did not sign)."""
    local, _, domain = (address or "").strip().strip("<>").lower().rpartition("@")
    our_local, _, our_domain = current_app.config["MAIL_BOUNCE_ADDRESS"].lower().rpartition("@")
    base, plus, tag = local.partition("+")
    if domain != our_domain or base != our_local or not plus:
        return None
    found = TAG.match(tag)
    if found is None:
        return None
    notification_id = int(found[1], 36)
    if not hmac.compare_digest(_mac(_key(), notification_id), found[2]):
        return None
    return notification_id


def is_ours(address: str) -> bool:
    """Whether the address is our bounce address, tagged or not (what the listener accepts)."""
    local, _, domain = (address or "").strip().strip("<>").lower().rpartition("@")
    our_local, _, our_domain = current_app.config["MAIL_BOUNCE_ADDRESS"].lower().rpartition("@")
    return domain == our_domain and local.partition("+")[0] == our_local
