"""The Roster pages: imports (admins) and the office's view of its people (staff)."""
from flask import Blueprint, abort, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from ..auth.decorators import admin_required
from ..extensions import db
from ..routing import page_arg
from . import imports, office
from .audience import grade_label
from .models import Guardian, RosterImport, SchoolClass, Student, Teacher
from .tasks import run_import

bp = Blueprint("roster", __name__, url_prefix="/roster")

STOP_POLLING = 286  # htmx 2 stops an `every` trigger when it gets this status


@bp.app_template_filter("grade")
def grade_filter(grade):
    return grade_label(grade)


# --- imports (admins) ---------------------------------------------------------------------------

def _imports_page():
    return db.paginate(select(RosterImport).options(joinedload(RosterImport.created_by))
                       .order_by(RosterImport.id.desc()), page=page_arg(), per_page=20, error_out=False)


@bp.get("")
@admin_required
def index(error: str | None = None, status: int = 200):
    page = _imports_page()
    rows = [(record, imports.progress(record)) for record in page.items]
    return render_template("roster/index.html", imports=page, rows=rows, error=error), status


@bp.post("/imports")
@admin_required
def upload():
    upload = request.files.get("bundle")
    if upload is None or not upload.filename:
        return index(error="Choose a OneRoster .zip or a students .csv file to upload.", status=422)
    data = upload.read()
    if not data:
        return index(error="The file is empty.", status=422)
    dry_run = request.form.get("mode", "dry-run") != "apply"
    record = imports.start(upload.filename, data, dry_run, current_user, run_import)
    return redirect(url_for("roster.import_detail", import_id=record.id))


@bp.get("/imports/<int:import_id>")
@admin_required
def import_detail(import_id: int):
    record = db.get_or_404(RosterImport, import_id)
    return render_template("roster/import.html", record=record, p=imports.progress(record))


@bp.get("/imports/<int:import_id>/progress")
@admin_required
def import_progress(import_id: int):
    record = db.get_or_404(RosterImport, import_id)
    p = imports.progress(record)
    return make_response(render_template("roster/_import.html", record=record, p=p),
                         STOP_POLLING if p.ended else 200)


@bp.post("/imports/<int:import_id>/apply")
@admin_required
def apply(import_id: int):
    try:
        record = imports.apply(import_id, current_user, run_import)
    except LookupError:
        abort(404)
    except imports.ImportStateError as exc:
        flash(str(exc), "error")
        return redirect(url_for("roster.import_detail", import_id=import_id))
    return redirect(url_for("roster.import_detail", import_id=record.id))


# --- the office's view (staff) --------------------------------------------------------------------

@bp.get("/people/<any(students, guardians, teachers):kind>")
@login_required
def people(kind: str):
    query = request.args.get("q", "")[:200]
    found = office.search_people(kind, query, page_arg())
    return render_template("roster/people.html", kind=kind, q=query, found=found)


@bp.get("/classes")
@login_required
def classes():
    query = request.args.get("q", "")[:200]
    return render_template("roster/classes.html", q=query, found=office.search_classes(query, page_arg()))


@bp.get("/classes/<int:class_id>")
@login_required
def class_detail(class_id: int):
    school_class = db.get_or_404(SchoolClass, class_id)
    return render_template("roster/class.html", c=school_class)


MODELS = {"students": Student, "guardians": Guardian, "teachers": Teacher}


@bp.get("/<any(students, guardians, teachers):kind>/<int:person_id>")
@login_required
def person(kind: str, person_id: int, error: str | None = None, status: int = 200):
    found = db.get_or_404(MODELS[kind], person_id)
    return render_template("roster/person.html", kind=kind, person=found, notices=office.notices_for(found.email),
                           error=error), status


@bp.get("/contacts-to-fix")
@login_required
def contacts_to_fix():
    page = page_arg()
    rows, total = office.contacts_to_fix(page)
    bouncing, bouncing_total = office.bouncing_guardians()
    suppressed = office.suppressions_for([g for student, _school, _class in rows for g in student.guardians])
    return render_template("roster/fix.html", rows=rows, total=total, page=page,
                           pages=max(1, -(-total // office.PER_PAGE)), errors={}, bouncing=bouncing,
                           bouncing_total=bouncing_total, suppressed=suppressed)


@bp.post("/guardians/<int:guardian_id>/email")
@admin_required
def correct_email(guardian_id: int):
    try:
        guardian = office.correct_email(guardian_id, request.form.get("email", ""))
    except LookupError:
        abort(404)
    except office.ContactError as exc:
        if request.headers.get("HX-Request"):
            guardian = db.session.get(Guardian, guardian_id)
            return render_template("roster/_fix_form.html", g=guardian, error=str(exc),
                                   value=request.form.get("email", "")), 422
        return person("guardians", guardian_id, error=str(exc), status=422)
    if request.headers.get("HX-Request"):
        return render_template("roster/_fix_form.html", g=guardian, error=None, saved=True)
    flash(f"Saved {guardian.name}'s address.", "ok")
    back = request.form.get("next", "")
    if not back.startswith("/roster/") or back.startswith("//"):  # only back to a roster page
        back = url_for("roster.person", kind="guardians", person_id=guardian_id)
    return redirect(back)
