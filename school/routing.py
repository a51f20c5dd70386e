"""URL converters and request helpers shared by every blueprint."""
from flask import request
from werkzeug.routing import IntegerConverter

# Ids are INTEGER columns; PostgreSQL's is 32-bit and SQLite's driver refuses past 64 bits.
MAX_ROW_ID = 2**31 - 1


class RowId(IntegerConverter):
    """``<int:…>`` that does not match ids no row can have, so they are a 404 rather than a
    query that fails with an overflow."""

    def __init__(self, map, fixed_digits=0, min=None, max=MAX_ROW_ID, signed=False):  # noqa: A002
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


MAX_PAGE = 1_000_000  # far past any real list; keeps OFFSET inside what the databases accept


def page_arg(name: str = "page") -> int:
    """The ``?page=`` a list view was asked for, 1 when missing or not a number, never out of range."""
    return min(max(request.args.get(name, 1, type=int), 1), MAX_PAGE)


def wants_json() -> bool:
    """Whether the caller reads JSON: the API, the health endpoints, or anyone who asks for it."""
    return request.path.startswith(("/api/", "/health")) or request.accept_mimetypes.best == "application/json"
