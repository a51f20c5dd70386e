"""The family pages answer a client address only so often: a token cannot be hunted for by brute force."""
import logging

from flask import Flask, current_app, request
from limits import parse_many

from ..auth.throttle import limiters

log = logging.getLogger(__name__)


class FamilyLimit:
    def __init__(self, app: Flask):
        self.items = parse_many(app.config["FAMILY_LIMIT_PER_ADDRESS"])
        self.shared, self.fallback = limiters(app, "family")

    def allowed(self, address: str) -> bool:
        for item in self.items:
            try:
                ok = self.shared.hit(item, address)
            except Exception as exc:  # the shared store is down: still limit, per process
                log.warning("family limit: shared store unavailable (%s); counting in this process",
                            type(exc).__name__)
                ok = self.fallback.hit(item, address)
            if not ok:
                return False
        return True


def init_app(app: Flask) -> None:
    app.extensions["school_family_limit"] = FamilyLimit(app)


def allowed() -> bool:
    """Count this request against its client address; False when over the limit."""
    return current_app.extensions["school_family_limit"].allowed(request.remote_addr or "unknown")
