"""The school notification app: ``create_app`` builds it, nothing else happens on import."""
from pathlib import Path

from flask import Flask

from . import config as config_module
from . import database, i18n, queue
from .extensions import babel, cache, csrf, db, login_manager, mail, migrate


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__, template_folder="../templates", static_folder="../static", instance_relative_config=False)
    app.config.from_mapping(config_module.load())
    if test_config:
        app.config.from_mapping(test_config)
    if not app.config.get("SECRET_KEY"):  # development or test (config refuses anything else)
        app.config["SECRET_KEY"] = config_module.development_secret(Path(app.config["DATA_DIR"]))
    register_extensions(app)
    register_blueprints(app)
    register_security(app)
    register_errorhandlers(app)
    register_commands(app)
    register_template_helpers(app)
    queue.configure(app.config)
    queue.bind_app(app)
    return app


def register_extensions(app: Flask) -> None:
    Path(app.config["DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    db.init_app(app)
    database.init_app(app)
    migrate.init_app(app, db, directory=str(Path(__file__).resolve().parent.parent / "migrations"),
                     render_as_batch=True)
    cache.init_app(app)
    mail.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)
    i18n.compile_catalogs(Path(app.config["BABEL_TRANSLATION_DIRECTORIES"]))
    babel.init_app(app, locale_selector=i18n.select_locale)
    from . import models  # noqa: F401  (the whole schema, for migrations)
    from .auth import login as auth_login

    auth_login.init_app(app)


def register_blueprints(app: Flask) -> None:
    from .admin.views import bp as admin_bp
    from .api.views import bp as api_bp
    from .auth.views import bp as auth_bp
    from .bounces.api import bp as bounces_api_bp
    from .bounces.views import bp as bounces_bp
    from .dev.views import bp as dev_bp
    from .events.views import bp as events_bp
    from .family import views as family_views
    from .health.views import bp as health_bp
    from .notify.views import bp as jobs_bp
    from .roster.api import bp as roster_api_bp
    from .roster.views import bp as roster_bp
    from .routing import RowId

    app.url_map.converters["int"] = RowId  # before any route is added, so every <int:…> uses it
    for blueprint in (auth_bp, events_bp, jobs_bp, admin_bp, api_bp, health_bp, dev_bp, roster_bp, roster_api_bp,
                      family_views.bp, bounces_bp, bounces_api_bp):
        app.register_blueprint(blueprint)
    csrf.exempt(family_views.unsubscribe)  # RFC 8058: the mail provider's POST carries no cookie or token
    csrf.exempt(api_bp)  # the JSON API takes bearer tokens only, never the session cookie
    csrf.exempt(roster_api_bp)
    csrf.exempt(bounces_bp)  # providers' webhooks: the shared secret is the capability, there is no session
    csrf.exempt(bounces_api_bp)


def register_security(app: Flask) -> None:
    """Headers, the client's address behind proxies, login throttling and operations' hooks."""
    from . import security
    from .auth import throttle
    from .counters import record
    from .family import limit as family_limit

    security.init_app(app)
    throttle.init_app(app)
    family_limit.init_app(app)
    record.init_app(app)


def register_errorhandlers(app: Flask) -> None:
    from .errors import init_app as init_errors

    init_errors(app)


def register_commands(app: Flask) -> None:
    from .cli import init_app as init_cli

    init_cli(app)


def register_template_helpers(app: Flask) -> None:
    from .templating import init_app as init_templating

    init_templating(app)
