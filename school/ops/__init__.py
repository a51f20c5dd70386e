"""Operations: shared counters, consumer heartbeats, queue statistics and the cache's bookkeeping."""
import time

from flask import Flask, g, request

# The views that create an event, and how the duration histogram labels them.
CREATE_ENDPOINTS = {"events.new": "form", "api.create": "api"}
CREATED = (202, 302)  # the API's "accepted" and the form's redirect to the new event


def init_app(app: Flask) -> None:
    from . import metrics

    @app.before_request
    def start_clock():
        if request.method == "POST" and request.endpoint in CREATE_ENDPOINTS:
            g.ops_started = time.perf_counter()

    @app.after_request
    def record_create(response):
        started = g.pop("ops_started", None)
        if started is not None and response.status_code in CREATED:
            metrics.observe("event_create", time.perf_counter() - started, via=CREATE_ENDPOINTS[request.endpoint])
        return response
