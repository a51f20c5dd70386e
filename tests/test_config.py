"""Configuration: the embedded default, the switch to PostgreSQL and Redis, and production's refusal."""
import subprocess
import sys
from pathlib import Path

import pytest
from flask_caching.backends import FileSystemCache, RedisCache
from huey.storage import PriorityRedisStorage, SqliteStorage
from sqlalchemy import text

from school import config, create_app, queue
from school.extensions import cache, db

from tests.support.host import ROOT, clean_environ
from tests.support.school import close

SETTINGS = config.variable_names()
# Any loopback port nobody listens on: building the app must not need Redis to be up.
UNUSED_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def bare_environment(monkeypatch, tmp_path):
    """A shell that sets none of the app's variables, in a fresh working directory."""
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def built(request):
    """Apps a test builds itself, let go of afterwards."""
    apps = []
    yield apps.append
    for app in apps:
        close(app)


def test_nothing_set_runs_embedded_under_instance(bare_environment, built):
    app = create_app()
    built(app)
    instance = bare_environment / "instance"
    assert Path(app.config["DATA_DIR"]) == instance
    with app.app_context():
        assert db.engine.dialect.name == "sqlite"
        assert Path(db.engine.url.database) == instance / "school.db"
        assert isinstance(cache.cache, FileSystemCache)
        cache.set("probe", 41)
        assert cache.get("probe") == 41
    assert list((instance / "cache").iterdir()), "the file cache writes under DATA_DIR"
    assert isinstance(queue.huey.storage, SqliteStorage)
    assert Path(queue.huey.storage.filename) == instance / "queue.db"
    assert (instance / "queue.db").exists()
    assert (app.config["MAIL_SERVER"], app.config["MAIL_PORT"]) == ("127.0.0.1", 8025)
    assert app.config["REDIS_URL"] is None
    assert app.config["APP_ENV"] == "development"


def test_data_dir_moves_database_queue_and_cache(bare_environment, built, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("elsewhere")
    app = create_app(config.load({"DATA_DIR": str(data_dir)}))
    built(app)
    with app.app_context():
        assert Path(db.engine.url.database) == data_dir / "school.db"
    assert Path(queue.huey.storage.filename) == data_dir / "queue.db"
    assert app.config["CACHE_DIR"] == str(data_dir / "cache")
    assert not (bare_environment / "instance").exists()


def test_mail_settings_come_from_the_environment():
    settings = config.load({"MAIL_SERVER": "127.0.0.2", "MAIL_PORT": "2525", "MAIL_USE_TLS": "true",
                            "MAIL_USERNAME": "notices", "MAIL_PASSWORD": "pw",
                            "MAIL_DEFAULT_SENDER": "Office <office@example.org>", "MAIL_RATE_LIMIT": "600/minute",
                            "NOTIFY_BATCH_SIZE": "250"})
    assert settings["MAIL_SERVER"] == "127.0.0.2"
    assert settings["MAIL_PORT"] == 2525
    assert settings["MAIL_USE_TLS"] is True
    assert (settings["MAIL_USERNAME"], settings["MAIL_PASSWORD"]) == ("notices", "pw")
    assert settings["MAIL_DEFAULT_SENDER"] == "Office <office@example.org>"
    assert settings["MAIL_RATE_LIMIT"] == "600/minute"
    assert settings["NOTIFY_BATCH_SIZE"] == 250


@pytest.mark.parametrize("name, value", [
    ("MAIL_PORT", "smtp"), ("NOTIFY_BATCH_SIZE", "0"), ("MAIL_RATE_LIMIT", "fast"), ("NOTIFY_RETRY_DELAY", "soon"),
])
def test_bad_values_are_refused_by_name(name, value):
    with pytest.raises(config.ConfigError, match=name):
        config.load({name: value})


@pytest.mark.parametrize("given, expected", [
    ("postgresql://postgres@127.0.0.1:5432/school", "postgresql+psycopg://postgres@127.0.0.1:5432/school"),
    ("postgres://postgres@127.0.0.1:5432/school", "postgresql+psycopg://postgres@127.0.0.1:5432/school"),
    ("postgresql+psycopg://postgres@127.0.0.1/school", "postgresql+psycopg://postgres@127.0.0.1/school"),
    ("sqlite:////srv/school/school.db", "sqlite:////srv/school/school.db"),
])
def test_database_url_chooses_the_database(given, expected):
    assert config.load({"DATABASE_URL": given})["SQLALCHEMY_DATABASE_URI"] == expected


def test_database_and_redis_urls_move_the_app_off_the_embedded_default(bare_environment, built, pg_url):
    app = create_app(config.load({"DATABASE_URL": pg_url, "REDIS_URL": UNUSED_REDIS,
                                  "DATA_DIR": str(bare_environment / "data")}))
    built(app)
    with app.app_context():
        assert db.engine.dialect.name == "postgresql"
        assert db.session.scalar(text("SELECT current_database()")) == pg_url.rsplit("/", 1)[1]
        assert isinstance(cache.cache, RedisCache)
    assert isinstance(queue.huey.storage, PriorityRedisStorage)
    assert not (bare_environment / "data" / "queue.db").exists()


def test_redis_url_puts_queue_and_cache_on_redis():
    settings = config.load({"REDIS_URL": UNUSED_REDIS})
    storage_class, kwargs = queue._storage_for(settings)
    assert storage_class is PriorityRedisStorage
    assert kwargs["connection_pool"].connection_kwargs["port"] == 1
    assert settings["CACHE_REDIS_URL"] == UNUSED_REDIS
    assert "CACHE_DIR" not in settings


@pytest.mark.parametrize("present, missing", [
    ({}, ["SECRET_KEY", "DATABASE_URL", "REDIS_URL"]),
    ({"SECRET_KEY": "s3cret"}, ["DATABASE_URL", "REDIS_URL"]),
    ({"DATABASE_URL": "postgresql://db/school", "REDIS_URL": UNUSED_REDIS}, ["SECRET_KEY"]),
    ({"SECRET_KEY": "s3cret", "DATABASE_URL": "postgresql://db/school", "REDIS_URL": ""}, ["REDIS_URL"]),
])
def test_production_refuses_to_start_naming_what_is_missing(present, missing):
    with pytest.raises(config.ConfigError) as refused:
        config.load({"APP_ENV": "production", **present})
    message = str(refused.value)
    for name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL"):
        assert (name in message) == (name in missing), message


def test_production_with_its_variables_starts_hardened():
    settings = config.load({"APP_ENV": "production", "SECRET_KEY": "s3cret",
                            "DATABASE_URL": "postgresql://postgres@127.0.0.1/school", "REDIS_URL": UNUSED_REDIS})
    assert settings["SECRET_KEY"] == "s3cret"
    assert settings["SESSION_COOKIE_SECURE"] is True


def _import_wsgi(tmp_path, **env):
    return subprocess.run([sys.executable, "-c", "import wsgi"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=clean_environ() | {"DATA_DIR": str(tmp_path), **env})


def test_wsgi_in_production_refuses_to_start_without_its_variables(tmp_path):
    refused = _import_wsgi(tmp_path, APP_ENV="production", SECRET_KEY="s3cret")
    assert refused.returncode != 0
    message = refused.stderr.strip().splitlines()[-1]
    assert "DATABASE_URL" in message and "REDIS_URL" in message
    assert "SECRET_KEY" not in message

    started = _import_wsgi(tmp_path, APP_ENV="production", SECRET_KEY="s3cret", REDIS_URL=UNUSED_REDIS,
                           DATABASE_URL="postgresql://postgres@127.0.0.1:5432/postgres")
    assert started.returncode == 0, started.stderr


def test_sqlite_shares_the_database_in_wal_mode_with_a_busy_timeout(app):
    with app.app_context(), db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


# --- which environments may run without a SECRET_KEY ---------------------------------------------

def _flask_routes(tmp_path, **env):
    """``flask --app app routes`` in a process of its own, with only these settings."""
    clean = {k: v for k, v in clean_environ().items() if not k.startswith("FLASK_")}
    flask = Path(sys.executable).parent / "flask"
    return subprocess.run([str(flask), "--app", "app", "routes"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=clean | {"DATA_DIR": str(tmp_path), **env})


def test_an_unknown_app_env_without_a_secret_key_refuses_to_start_naming_both(tmp_path):
    refused = _flask_routes(tmp_path, APP_ENV="staging")
    assert refused.returncode != 0
    assert "SECRET_KEY" in refused.stderr
    assert "APP_ENV must be one of development, test, production, not 'staging'" in refused.stderr
    assert "/health/ready" not in refused.stdout


@pytest.mark.parametrize("value", ["staging", "prod", "Production-1", "dev"])
def test_only_known_app_envs_are_accepted_naming_the_allowed_ones(value):
    with pytest.raises(config.ConfigError, match="APP_ENV must be one of development, test, production"):
        config.load({"APP_ENV": value, "SECRET_KEY": "s3cret"})


@pytest.mark.parametrize("value", ["development", "test", "TEST", ""])
def test_development_and_test_run_without_a_secret_key_on_a_key_of_their_own(value, tmp_path):
    started = _flask_routes(tmp_path, APP_ENV=value)
    assert started.returncode == 0, started.stderr
    assert "/health/ready" in started.stdout
    key = (tmp_path / "secret-key").read_text()
    assert len(key) == 64 and (tmp_path / "secret-key").stat().st_mode & 0o077 == 0
    assert _flask_routes(tmp_path, APP_ENV=value).returncode == 0
    assert (tmp_path / "secret-key").read_text() == key, "every process of one DATA_DIR signs with one key"


def test_processes_of_one_data_dir_share_the_generated_key(bare_environment, built, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("shared")
    first, second = (create_app(config.load({"DATA_DIR": str(data_dir)})) for _ in range(2))
    built(first)
    built(second)
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"] != "dev-only-not-secret"
    other = create_app(config.load({"DATA_DIR": str(tmp_path_factory.mktemp("other"))}))
    built(other)
    assert other.config["SECRET_KEY"] != first.config["SECRET_KEY"]
