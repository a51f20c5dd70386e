"""The JSON API: bearer tokens only, strict types, ``{"error": ...}`` on every refusal."""
from flask import Blueprint, abort, g, jsonify, make_response, request, url_for
from sqlalchemy import select

from ..auth.tokens import token_required
from ..events.models import Event
from ..events.followups import cancel_event, change_event, create_reminder, parse_changes
from ..events.services import EventError, create_event, parse_datetime, parse_event
from ..extensions import db
from ..routing import page_arg
from ..timeutil import aware
from ..notify import controls, recipients, schedule
from ..notify.models import NotificationJob
from ..notify.progress import progress
from ..notify.tasks import enqueue_batch, enqueue_fanout

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_PER_PAGE = 100


def _error(message: str, status: int, **extra):
    return jsonify(error=message, **extra), status


def _job_json(job: NotificationJob) -> dict:
    data = progress(job).to_json()
    data["url"] = url_for("api.job", job_id=job.id, _external=True)
    return data


@bp.post("/events")
@token_required()
def create():
    data, refusal = _json_body(object_only=False)  # parse_event names a body that is not an object
    if refusal:
        return refusal
    try:
        checked = parse_event(data)
    except EventError as exc:
        return _error("invalid event", 422, fields=exc.fields)
    event = create_event(checked, g.api_user, enqueue_fanout)
    return _accepted(event, **({"notes": checked.notes} if checked.notes else {}))


def _accepted(event: Event, **extra):
    """202 with the new job's address: it is sent in the background."""
    job_url = url_for("api.job", job_id=event.job.id, _external=True)
    response = jsonify(event_id=event.id, job_id=event.job.id, job_url=job_url, **extra)
    response.headers["Location"] = job_url
    return response, 202


def _event_or_404(event_id: int) -> Event:
    found = db.session.get(Event, event_id)
    if found is None:
        abort(make_response(_error(f"no event {event_id}", 404)))
    return found


def _json_body(object_only: bool = True):
    """The request's JSON (an object unless ``object_only`` is false), or a refusal to return."""
    if not request.is_json:
        return None, _error("send a JSON object with Content-Type: application/json", 415)
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # e.g. "[" * 100_000: the parser gives up before the body ends
        return None, _error("the JSON is nested too deeply", 400)
    if data is None:
        return None, _error("the body is not valid JSON", 400)
    if object_only and not isinstance(data, dict):
        return None, _error("the body is not a JSON object", 400)
    return data, None


def _moment(value) -> str | None:
    return aware(value).isoformat() if value else None


def _event_json(found: Event) -> dict:
    return {"id": found.id, "title": found.title, "description": found.description, "location": found.location,
            "starts_at": _moment(found.starts_at), "ends_at": _moment(found.ends_at),
            "priority": found.priority, "rsvp_asked": found.rsvp, "audience": found.audience,
            "translations": found.translations or {}, "sequence": found.sequence,
            "updated_at": _moment(found.updated_at), "canceled_at": _moment(found.canceled_at),
            "canceled": found.canceled_at is not None, "original_id": found.original_id,
            "changes": found.changes or {},
            "reminders": [{"before": r.before, "to": r.to,
                           "due_at": _moment(r.due_at),
                           "job_id": r.job_id} for r in found.reminders]}


@bp.get("/events/<int:event_id>")
@token_required()
def event(event_id: int):
    """The event with its job's progress, acknowledgements and RSVP answers."""
    found = _event_or_404(event_id)
    data = _event_json(found)
    job_data = _job_json(found.job) if found.job else None
    data["job"] = job_data
    data["acknowledged"] = job_data["acknowledged"] if job_data else 0
    data["rsvp"] = job_data["rsvp"] if job_data else {"yes": 0, "no": 0, "maybe": 0}
    data["opted_out"] = job_data["opted_out"] if job_data else 0
    return jsonify(data)


@bp.post("/events/<int:event_id>/remind")
@token_required()
def remind(event_id: int):
    """A follow-up job for those who have not acknowledged (``{"who": "not_acknowledged"}``) or all."""
    found = _event_or_404(event_id)
    data = request.get_json(silent=True) if request.is_json else None
    if not isinstance(data, dict):
        return _error("send a JSON object like {\"who\": \"not_acknowledged\"}", 400)
    try:
        reminder = create_reminder(found, data.get("who"), g.api_user, enqueue_fanout)
    except EventError as exc:
        return _error("cannot remind", 422, fields=exc.fields)
    return _accepted(reminder)


@bp.patch("/events/<int:event_id>")
@token_required()
def change(event_id: int):
    """Change the event's title, description, location or times; ``"notify": true`` sends an update
    notice (what changed, old -> new, and the calendar entry moved) to everyone it was sent to."""
    _event_or_404(event_id)
    data, refusal = _json_body()
    if refusal:
        return refusal
    try:
        fields, notify = parse_changes(data)
        result = change_event(event_id, fields, notify, g.api_user, enqueue_fanout)
    except EventError as exc:
        return _error("cannot change the event", 422, fields=exc.fields)
    return jsonify(_change_json(result))


@bp.post("/events/<int:event_id>/cancel")
@token_required()
def cancel_event_route(event_id: int):
    """Cancel the event: nothing more of it is sent; ``"notify": true`` sends a cancellation notice."""
    _event_or_404(event_id)
    data, refusal = _json_body() if request.content_length else ({}, None)
    if refusal:
        return refusal
    unknown = set(data) - {"notify"}
    if unknown:
        return _error("cannot cancel the event", 422, fields={"body": "unknown key: " + ", ".join(sorted(unknown))})
    try:
        result = cancel_event(event_id, data.get("notify", False), g.api_user, enqueue_fanout)
    except EventError as exc:
        return _error("cannot cancel the event", 422, fields=exc.fields)
    return jsonify(_change_json(result))


def _change_json(result) -> dict:
    notice = result.notice
    data = {"event": _event_json(result.event), "changes": result.changes, "sequence": result.sequence,
            "note": result.note, "notice": None}
    if notice is not None:
        data["notice"] = {"event_id": notice.id, "job_id": notice.job.id,
                          "job_url": url_for("api.job", job_id=notice.job.id, _external=True)}
    return data


@bp.post("/jobs/<int:job_id>/reschedule")
@token_required(admin=True)
def reschedule(job_id: int):
    """Move a scheduled job: ``{"send_at": "2026-12-07T07:30"}`` (school time without an offset;
    null: now)."""
    data, refusal = _json_body()
    if refusal:
        return refusal
    raw = data.get("send_at")
    try:
        send_at = None if raw in (None, "") else parse_datetime(raw)[0]
        schedule.reschedule(job_id, send_at)
    except LookupError:
        return _error(f"no job {job_id}", 404)
    except schedule.ScheduleError as exc:
        return _error("cannot reschedule", 422, fields=exc.fields)
    except ValueError as exc:
        return _error("cannot reschedule", 422, fields={"send_at": str(exc)})
    return jsonify(_job_json(db.session.get(NotificationJob, job_id)))


@bp.get("/jobs")
@token_required()
def jobs():
    page = page_arg()
    per_page = min(max(request.args.get("per_page", 20, type=int), 1), MAX_PER_PAGE)
    result = db.paginate(select(NotificationJob).order_by(NotificationJob.id.desc()), page=page,
                         per_page=per_page, error_out=False)
    return jsonify(jobs=[_job_json(job) for job in result.items], page=result.page, per_page=per_page,
                   total=result.total, pages=result.pages)


@bp.get("/jobs/<int:job_id>")
@token_required()
def job(job_id: int):
    found = db.session.get(NotificationJob, job_id)
    if found is None:
        return _error(f"no job {job_id}", 404)
    return jsonify(_job_json(found))


@bp.get("/jobs/<int:job_id>/recipients")
@token_required(admin=True)
def job_recipients(job_id: int):
    """The job's recipient ledger, filtered (``status``), searched (``q``) and paginated (``page``)."""
    if db.session.get(NotificationJob, job_id) is None:
        return _error(f"no job {job_id}", 404)
    per_page = min(max(request.args.get("per_page", 50, type=int), 1), MAX_PER_PAGE)
    try:
        found = recipients.page(job_id, request.args.get("status", ""), request.args.get("q", ""), page_arg(),
                                per_page)
    except recipients.LedgerError as exc:
        return _error("invalid filter", 422, fields=exc.fields)
    # ``total_exact`` false: ``total`` and ``pages`` are lower bounds (a long list is counted only
    # so far past the page asked for); page on while ``has_next``.
    return jsonify(recipients=[recipients.row(r) for r in found.items], page=found.page, per_page=per_page,
                   total=found.total, total_exact=found.exact, pages=found.pages, has_next=found.has_next)


@bp.post("/jobs/<int:job_id>/<any(pause, resume, cancel, 'retry-failed'):action>")
@token_required(admin=True)
def control(job_id: int, action: str):
    try:
        retried = controls.apply(job_id, action, enqueue_batch)
    except LookupError:
        return _error(f"no job {job_id}", 404)
    except controls.JobStateError as exc:
        return _error(f"cannot {action}: {exc}", 409)
    data = _job_json(db.session.get(NotificationJob, job_id))
    if retried is not None:
        data["retried"] = retried
    return jsonify(data)
