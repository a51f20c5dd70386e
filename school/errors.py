"""Errors answer in the caller's language: JSON for the API, a page for people. Never a bare 500."""
from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from .extensions import db
from .routing import wants_json


def init_app(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError):
        if wants_json():
            return jsonify(error=f"CSRF check failed: {error.description}"), 400
        return render_template("error.html", code=400, message="The form expired or was not sent from this site. "
                               "Reload the page and try again."), 400

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if wants_json():
            return jsonify(error=error.description), error.code
        return render_template("error.html", code=error.code, message=error.description), error.code

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        db.session.rollback()
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        if wants_json():
            return jsonify(error="internal error; nothing was changed"), 500
        return render_template("error.html", code=500, message="Something went wrong on our side."), 500
