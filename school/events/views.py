from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from ..extensions import db
from ..i18n import LANGUAGES
from ..notify.tasks import enqueue_fanout
from ..roster import office
from ..roster.audience import AudienceError, validate as validate_audience
from ..roster.services import audience_choices, cached_count
from ..routing import page_arg
from ..timeutil import local_input
from .models import Event
from .followups import CHANGEABLE, cancel_event, change_event, create_reminder, parse_changes
from .services import EventError, create_event, events_page, parse_event

bp = Blueprint("events", __name__)

TIME_LABELS = {"starts_at": "Starts", "ends_at": "Ends"}
REMINDER_TO = {"all": "everyone it was sent to", "not_acknowledged": "those who have not acknowledged",
               "rsvp_yes": "those who answered yes"}


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
    follow_ups = db.session.scalars(select(Event).where(Event.original_id == event.id).order_by(Event.id)).all()
    return render_template("events/detail.html", event=event, languages=LANGUAGES, unreached=unreached,
                           follow_ups=follow_ups, by_job={f.job.id: f for f in follow_ups if f.job},
                           reminder_to=REMINDER_TO)


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


TRANSLATION_FIELDS = ("language", "title", "description", "location")
MAX_TRANSLATIONS = len(LANGUAGES)


def translation_blocks(form) -> list[dict]:
    """The form's translation blocks (``translations-<n>-<field>``), in order, blank ones left out."""
    indexes = sorted({int(key.split("-")[1]) for key in form
                      if key.startswith("translations-") and key.count("-") == 2 and key.split("-")[1].isdigit()})
    blocks = [{name: form.get(f"translations-{i}-{name}", "") for name in TRANSLATION_FIELDS}
              for i in indexes[:MAX_TRANSLATIONS]]
    return [b for b in blocks if any(v.strip() for v in b.values())]


def _translations(blocks: list[dict]) -> dict:
    """The blocks as the API takes them: {language: {title, description, location}}. A block
    without a language, or a second one for a language, comes under a key the check refuses."""
    data = {}
    for block in blocks:
        key = block["language"].strip() or "?"
        data[key if key not in data else f"{key} (twice)"] = {name: block[name] for name in TRANSLATION_FIELDS[1:]}
    return data


FORM_REMINDERS = 2


def reminder_rows(form) -> list[dict]:
    """The form's reminder rows (``reminder-<n>-before``, ``reminder-<n>-to``), blank ones kept so
    an error stays beside the row it is about."""
    return [{"before": form.get(f"reminder-{i}-before", "").strip(), "to": form.get(f"reminder-{i}-to", "all")}
            for i in range(FORM_REMINDERS)]


def form_data(form) -> tuple[dict, list[str]]:
    """The form's fields in the shape the API takes, so one validation serves both."""
    grades, bad = [], []
    for raw in form.getlist("grades"):
        try:
            grades.append(int(raw))
        except ValueError:
            bad.append(raw)
    rows = reminder_rows(form)
    data = {
        "title": form.get("title", ""), "description": form.get("description", ""),
        "location": form.get("location", ""), "starts_at": form.get("starts_at", ""),
        "ends_at": form.get("ends_at", ""), "priority": form.get("priority", "normal"),
        "rsvp": form.get("rsvp") == "on",
        "send_at": form.get("send_at", ""),
        "reminder_rows": rows,
        "reminders": [row for row in rows if row["before"]],
        "translations": _translations(translation_blocks(form)),
        "translation_blocks": translation_blocks(form),
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
        if request.form.get("add_translation"):  # without JavaScript: the same form, one more block
            values["translation_blocks"].append(dict.fromkeys(TRANSLATION_FIELDS, ""))
            return render_template("events/new.html", values=values, errors={}, choices=audience_choices(),
                                   reach=_reach(values["audience"]), languages=LANGUAGES)
        try:
            checked = parse_event(values)
        except EventError as exc:
            errors = _form_keys(dict(exc.fields), values["reminder_rows"])
        if bad_grades:
            errors["grades"] = _unknown_grades(bad_grades)
        if not errors:
            event = create_event(checked, current_user, enqueue_fanout)
            for name, note in checked.notes.items():
                flash(f"{TIME_LABELS[name]}: {note}")
            return redirect(url_for("events.detail", event_id=event.id, created=1))
    status = 422 if errors else 200
    return render_template("events/new.html", values=values, errors=errors, choices=audience_choices(),
                           reach=_reach(values["audience"]), languages=LANGUAGES), status


def _form_keys(errors: dict, rows: list[dict]) -> dict:
    """The API's ``reminders.<n>`` counts only the reminders chosen; the form's rows include blank
    ones: put each error beside its own row."""
    filled = [index for index, row in enumerate(rows) if row["before"]]
    moved = {}
    for key, message in errors.items():
        parts = key.split(".")
        if parts[0] == "reminders" and len(parts) > 1 and parts[1].isdigit() and int(parts[1]) < len(filled):
            parts[1] = str(filled[int(parts[1])])
        moved[".".join(parts)] = message
    return moved


@bp.route("/events/<int:event_id>/edit", methods=["GET", "POST"])
def edit(event_id: int):
    """Change the event's text and times, telling the recipients or not."""
    event = db.get_or_404(Event, event_id)
    if event.original_id is not None or event.canceled_at is not None:
        flash("This event can no longer be changed: " + ("it is canceled." if event.canceled_at
                                                           else "it is a follow-up notice; change the event it is about."),
              "error")
        return redirect(url_for("events.detail", event_id=event_id))
    values = {"title": event.title, "description": event.description, "location": event.location,
              "starts_at": local_input(event.starts_at), "ends_at": local_input(event.ends_at), "notify": True}
    errors = {}
    if request.method == "POST":
        values = {name: request.form.get(name, "") for name in CHANGEABLE}
        values["notify"] = request.form.get("notify") == "on"
        try:
            fields, notify = parse_changes(values)
            result = change_event(event_id, fields, notify, current_user, enqueue_fanout)
        except EventError as exc:
            errors = exc.fields
        else:
            if not result.changes:
                flash("Nothing changed.")
            elif result.notice is not None:
                flash("Saved. An update notice is on its way to everyone it was sent to.")
            else:
                flash("Saved. " + (result.note or "The recipients were not told; the pages and the calendar "
                                                  "file show the new details."))
            return redirect(url_for("events.detail", event_id=event_id))
    return render_template("events/edit.html", event=event, values=values, errors=errors), 422 if errors else 200


@bp.post("/events/<int:event_id>/cancel")
def cancel(event_id: int):
    db.get_or_404(Event, event_id)
    if request.form.get("confirm") != "on":
        flash("Tick 'Yes, cancel this event' to cancel it.", "error")
        return redirect(url_for("events.detail", event_id=event_id))
    try:
        result = cancel_event(event_id, request.form.get("notify") == "on", current_user, enqueue_fanout)
    except EventError as exc:
        flash("Cannot cancel: " + "; ".join(exc.fields.values()), "error")
        return redirect(url_for("events.detail", event_id=event_id))
    flash("The event is canceled." + (" A cancellation notice is on its way to everyone it was sent to."
                                      if result.notice is not None else " " + (result.note or "The recipients were not told.")))
    return redirect(url_for("events.detail", event_id=event_id))


@bp.get("/events/translation")
def translation():
    """One more translation block for the create form (htmx), and the button for the next."""
    index = min(request.args.get("index", 0, type=int), MAX_TRANSLATIONS)
    if index < 0 or index >= MAX_TRANSLATIONS:
        return "", 204
    return render_template("events/_translation_block.html", index=index, next_index=index + 1,
                           block=dict.fromkeys(TRANSLATION_FIELDS, ""), errors={}, languages=LANGUAGES)


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
