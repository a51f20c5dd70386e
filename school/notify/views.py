"""The progress pages: every job with its bar, one job live, and the admins' controls."""
from flask import (Blueprint, Response, abort, flash, make_response, redirect, render_template, request,
                   stream_with_context, url_for)
from flask_login import current_user, login_required
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from ..auth.decorators import admin_required
from ..extensions import db
from ..routing import page_arg
from ..timeutil import aware, utcnow
from ..events.services import parse_datetime
from . import controls, recipients, schedule
from .models import NotificationJob
from .progress import failed_recipients, progress
from .tasks import enqueue_batch

bp = Blueprint("jobs", __name__, url_prefix="/jobs")

STOP_POLLING = 286  # htmx 2 stops an `every` trigger when it gets this status
# Once sending has ended, families still read and answer until the event is over: the page keeps
# up with them at this slower pace.
ANSWERS_POLL = "10s"


def _poll(job: NotificationJob, p) -> str | None:
    """How often the progress fragment asks again: every second while sending, every ANSWERS_POLL
    while families may still acknowledge or answer, never once the event is over or its rows purged."""
    if not p.ended:
        return "1s"
    over = aware(job.event.ends_at or job.event.starts_at) <= utcnow()
    return None if over or job.purged_at is not None else ANSWERS_POLL


def _progress_response(html: str, poll: str | None):
    return make_response(html, 200 if poll else STOP_POLLING)


def _job_or_404(job_id: int) -> NotificationJob:
    job = db.session.get(NotificationJob, job_id, options=[joinedload(NotificationJob.event)])
    if job is None:
        abort(404)
    return job


def _job_page():
    page = page_arg()
    query = select(NotificationJob).options(joinedload(NotificationJob.event)).order_by(
        NotificationJob.id.desc())
    jobs = db.paginate(query, page=page, per_page=25, error_out=False)
    rows = [(job, progress(job)) for job in jobs.items]
    # The first page always polls (new jobs appear there); older pages while a job can still change.
    return {"jobs": jobs, "rows": rows, "live": jobs.page == 1 or any(not p.ended for _, p in rows)}


@bp.get("")
@admin_required
def index():
    return render_template("jobs/index.html", **_job_page())


@bp.get("/rows")
@admin_required
def rows():
    """The list's rows, polled every second on the first page or while a job shown is still going."""
    page = _job_page()
    return make_response(render_template("jobs/_rows.html", **page), 200 if page["live"] else STOP_POLLING)


@bp.get("/<int:job_id>")
@admin_required
def detail(job_id: int):
    job = _job_or_404(job_id)
    p = progress(job)
    return render_template("jobs/detail.html", job=job, p=p, failed=failed_recipients(job_id),
                           controls=True, poll=_poll(job, p))


@bp.get("/<int:job_id>/progress")
@login_required
def fragment(job_id: int):
    """What the page polls: kept counters only; 286 once nothing on it can change any more.

    Staff see the counts; who failed and what their server said only admins and the event's
    creator, and the controls only admins."""
    job = _job_or_404(job_id)
    p = progress(job)
    controls = request.args.get("controls") == "1" and current_user.is_admin
    may_see_recipients = current_user.is_admin or job.event.created_by_id == current_user.id
    poll = _poll(job, p)
    html = render_template("jobs/_progress.html", job=job, p=p, controls=controls, poll=poll,
                           failed=failed_recipients(job_id) if p.failed and may_see_recipients else [])
    return _progress_response(html, poll)


@bp.post("/<int:job_id>/<any(pause, resume, cancel, 'retry-failed'):action>")
@admin_required
def control(job_id: int, action: str):
    _job_or_404(job_id)
    try:
        message = controls.describe(action, controls.apply(job_id, action, enqueue_batch))
    except controls.JobStateError as exc:
        message = f"Cannot {action.replace('-', ' ')}: {exc}."
    if request.headers.get("HX-Request"):
        job = _job_or_404(job_id)
        p = progress(job)
        poll = _poll(job, p)
        html = render_template("jobs/_progress.html", job=job, p=p, controls=True, message=message, poll=poll,
                               failed=failed_recipients(job_id) if p.failed else [])
        return _progress_response(html, poll)
    flash(message)
    return redirect(url_for("jobs.detail", job_id=job_id))


@bp.post("/<int:job_id>/reschedule")
@admin_required
def reschedule(job_id: int):
    """Move a scheduled job to another time (the form's school time; empty: now)."""
    _job_or_404(job_id)
    raw = request.form.get("send_at", "").strip()
    try:
        schedule.reschedule(job_id, parse_datetime(raw)[0] if raw else None)
    except schedule.ScheduleError as exc:
        flash("Cannot reschedule: " + "; ".join(exc.fields.values()), "error")
    except ValueError as exc:
        flash(f"Cannot reschedule: {exc}.", "error")
    else:
        flash("Rescheduled." if raw else "It goes out now.")
    return redirect(url_for("jobs.detail", job_id=job_id))


@bp.get("/<int:job_id>/recipients")
@admin_required
def ledger(job_id: int):
    """Every recipient: status, sent time, the server's reply, acknowledgement and RSVP."""
    job = _job_or_404(job_id)
    status, q = request.args.get("status", ""), request.args.get("q", "")
    try:
        found = recipients.page(job_id, status, q, page_arg())
    except recipients.LedgerError as exc:
        return render_template("jobs/recipients.html", job=job, status=status, q=q, page=None,
                               filters=recipients.FILTERS, errors=exc.fields), 422
    return render_template("jobs/recipients.html", job=job, status=status, q=q, page=found,
                           filters=recipients.FILTERS, errors={})


@bp.get("/<int:job_id>/recipients.csv")
@admin_required
def ledger_csv(job_id: int):
    _job_or_404(job_id)
    try:
        lines = recipients.csv_lines(job_id, request.args.get("status", ""), request.args.get("q", ""))
        first = next(lines)
    except recipients.LedgerError as exc:
        return {"error": "invalid filter", "fields": exc.fields}, 422

    def body():
        yield first
        yield from lines

    return Response(stream_with_context(body()), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="job-{job_id}-recipients.csv"'})
