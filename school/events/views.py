from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from ..extensions import db
from ..notify.tasks import enqueue_fanout
from ..roster import office
from ..roster.audience import AudienceError, validate as validate_audience
from ..roster.services import audience_choices, cached_count
from ..routing import page_arg
from .models import Event
from .services import EventError, create_event, create_reminder, events_page, parse_event

bp = Blueprint("events", __name__)

TIME_LABELS = {"starts_at": "Starts", "ends_at": "Ends"}


@bp.before_request
@login_required
def require_login():
    """Every events page is for logged-in staff."""


@bp.get("/")
def index():
    events = events_page(page_arg(), per_page=20)
    return render_template("events/index.html", events=events)


@bp.get("/events/<int:event_id>")
def detail(event_id: int):
    event = db.get_or_404(Event, event_id)
    unreached = office.unreached_students(event.job) if event.job else None
    return render_template("events/detail.html", event=event, unreached=unreached)


@bp.post("/events/<int:event_id>/remind")
def remind(event_id: int):
    event = db.get_or_404(Event, event_id)
    try:
        reminder = create_reminder(event, request.form.get("who"), current_user, enqueue_fanout)
    except EventError as exc:
        flash("Cannot remind: " + "; ".join(exc.fields.values()), "error")
        return redirect(url_for("events.detail", event_id=event_id))
    flash("The reminder is on its way.")
    return redirect(url_for("events.detail", event_id=reminder.id))


def form_data(form) -> tuple[dict, list[str]]:
    """The form's fields in the shape the API takes, so one validation serves both."""
    grades, bad = [], []
    for raw in form.getlist("grades"):
        try:
            grades.append(int(raw))
        except ValueError:
            bad.append(raw)
    data = {
        "title": form.get("title", ""), "description": form.get("description", ""),
        "location": form.get("location", ""), "starts_at": form.get("starts_at", ""),
        "ends_at": form.get("ends_at", ""), "priority": form.get("priority", "normal"),
        "rsvp": form.get("rsvp") == "on",
        "audience": {"roles": form.getlist("roles"), "grades": grades, "classes": form.getlist("classes"),
                     "schools": form.getlist("schools")},
    }
    return data, bad


@bp.route("/events/new", methods=["GET", "POST"])
def new():
    values = {"priority": "normal", "audience": {"roles": ["guardians"], "grades": [], "classes": [], "schools": []}}
    errors = {}
    if request.method == "POST":
        values, bad_grades = form_data(request.form)
        try:
            checked = parse_event(values)
        except EventError as exc:
            errors = dict(exc.fields)
        if bad_grades:
            errors["grades"] = _unknown_grades(bad_grades)
        if not errors:
            event = create_event(checked, current_user, enqueue_fanout)
            for name, note in checked.notes.items():
                flash(f"{TIME_LABELS[name]}: {note}")
            return redirect(url_for("events.detail", event_id=event.id, created=1))
    status = 422 if errors else 200
    return render_template("events/new.html", values=values, errors=errors, choices=audience_choices(),
                           reach=_reach(values["audience"])), status


@bp.get("/events/reach")
def reach():
    """The audience picker's live count, swapped in by htmx as staff change the targeting."""
    data, bad_grades = form_data(request.args)
    if bad_grades:
        return render_template("events/_reach.html", reach={"error": _unknown_grades(bad_grades)})
    return render_template("events/_reach.html", reach=_reach(data["audience"]))


def _unknown_grades(raw: list[str]) -> str:
    return "Unknown grade: " + ", ".join(raw)


def _reach(audience: dict):
    try:
        chosen = validate_audience(audience["roles"], audience["grades"], audience["classes"], audience["schools"])
    except AudienceError as exc:
        return {"error": "; ".join(exc.fields.values())}
    return {"count": cached_count(chosen), "audience": chosen}
