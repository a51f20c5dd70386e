"""The one Huey instance, built from the same settings as the app.

With ``REDIS_URL`` the queue lives on Redis (with priorities); without it, in a SQLite file
under ``DATA_DIR``. Tasks run inside the app that ``bind_app`` registered: the consumer's
``tasks.py`` builds one with ``create_app``.
"""
import threading
from contextlib import contextmanager

from huey import Huey
from huey.storage import PriorityRedisStorage, SqliteStorage
from redis import ConnectionPool

from . import config as config_module

URGENT = 100
NORMAL = 0

_app = None
_app_lock = threading.RLock()


def _storage_for(settings: dict):
    """Storage class and its arguments for these settings."""
    if settings.get("REDIS_URL"):
        # Time out instead of hanging when Redis is unreachable: the web app then saves the job for
        # the outbox, and consumers back off and retry.
        pool = ConnectionPool.from_url(settings["REDIS_URL"], socket_connect_timeout=2, socket_timeout=10,
                                       health_check_interval=30)
        return PriorityRedisStorage, {"connection_pool": pool}
    from pathlib import Path

    Path(settings["HUEY_SQLITE_PATH"]).parent.mkdir(parents=True, exist_ok=True)
    return SqliteStorage, {"filename": settings["HUEY_SQLITE_PATH"], "timeout": 30}


def _build(settings: dict) -> Huey:
    storage_class, kwargs = _storage_for(settings)
    return Huey(settings["HUEY_NAME"], results=False, utc=True, storage_class=storage_class, **kwargs)


def configure(settings: dict) -> None:
    """Point the shared instance at the queue these settings name."""
    storage_class, kwargs = _storage_for(settings)
    huey.name = settings["HUEY_NAME"]
    huey.storage_class = storage_class
    huey.storage_kwargs = kwargs
    huey.storage = huey.create_storage()


def bind_app(app) -> None:
    global _app
    with _app_lock:
        _app = app


def get_app():
    """The app tasks run in: the one ``create_app`` built in this process (``tasks.py`` builds it)."""
    with _app_lock:
        if _app is None:
            raise RuntimeError("no app in this process: build one with school.create_app() before running tasks")
        return _app


@contextmanager
def app_context():
    with get_app().app_context():
        yield


def priority_for(urgent: bool) -> int:
    return URGENT if urgent else NORMAL


huey = _build(config_module.load())
