"""What the office looks up: people and classes by name or email, one person's links and notices,
and the students no guardian can be reached for by email."""
from dataclasses import dataclass

from sqlalchemy import exists, func, or_, select

from ..bounces.models import Suppression
from ..bounces.suppressions import active as active_suppressions, lift
from ..extensions import db
from ..notify.models import JOB_ENDED, Notification, NotificationJob, RecipientStatus
from ..events.models import Event
from .audience import Audience, students_in_scope
from .bundle import check_email
from .models import Guardian, School, SchoolClass, Student, Teacher, student_guardians
from .services import roster_changed

PEOPLE = {"students": Student, "guardians": Guardian, "teachers": Teacher}
PER_PAGE = 50


def search_people(kind: str, query: str, page: int, include_inactive: bool = False):
    model = PEOPLE[kind]
    statement = select(model).order_by(model.name, model.id)
    if not include_inactive:
        statement = statement.where(model.active)
    query = query.strip()
    if query:
        like = f"%{query.lower()}%"
        statement = statement.where(or_(func.lower(model.name).like(like), func.lower(model.email).like(like),
                                        func.lower(model.invalid_email).like(like)))
    return db.paginate(statement, page=page, per_page=PER_PAGE, error_out=False)


def search_classes(query: str, page: int):
    statement = select(SchoolClass).where(SchoolClass.active).order_by(SchoolClass.school_id, SchoolClass.grade,
                                                                      SchoolClass.name)
    if query.strip():
        like = f"%{query.strip().lower()}%"
        statement = statement.where(or_(func.lower(SchoolClass.name).like(like), func.lower(SchoolClass.title).like(like)))
    return db.paginate(statement, page=page, per_page=PER_PAGE, error_out=False)


@dataclass
class NoticeSent:
    event_id: int
    title: str
    status: str
    sent_at: object
    error: str | None


def notices_for(email: str | None, limit: int = 50) -> list[NoticeSent]:
    """The notices sent to this address, newest first, with each outcome (until retention purges them)."""
    if not email:
        return []
    rows = db.session.execute(
        select(Event.id, Event.title, Notification.status, Notification.sent_at, Notification.last_error)
        .join(NotificationJob, NotificationJob.id == Notification.job_id)
        .join(Event, Event.id == NotificationJob.event_id)
        .where(Notification.email == email.strip().lower())
        .order_by(Notification.id.desc()).limit(limit)).all()
    return [NoticeSent(*row) for row in rows]


def _suppressed(column):
    """The address is suppressed: it bounced, so mail to it reaches nobody."""
    return exists().where(Suppression.email == func.lower(func.trim(column)), Suppression.lifted_at.is_(None))


def _reachable_guardian():
    return exists().where(student_guardians.c.student_id == Student.id,
                          student_guardians.c.guardian_id == Guardian.id,
                          Guardian.active, func.coalesce(func.trim(Guardian.email), "") != "",
                          ~_suppressed(Guardian.email))


def bouncing_guardians(limit: int = 200) -> tuple[list[tuple[Guardian, Suppression]], int]:
    """Active guardians whose address is suppressed (it bounced), with why and since when, newest
    first; and how many there are in all."""
    where = (Guardian.active, Suppression.lifted_at.is_(None))
    joined = select(Guardian, Suppression).join(Suppression, Suppression.email == func.lower(func.trim(Guardian.email)))
    rows = db.session.execute(joined.where(*where).order_by(Suppression.since.desc(), Guardian.name)
                              .limit(limit)).all()
    total = db.session.scalar(select(func.count()).select_from(Guardian).join(
        Suppression, Suppression.email == func.lower(func.trim(Guardian.email))).where(*where))
    return [tuple(row) for row in rows], total


def suppressions_for(guardians) -> dict[str, Suppression]:
    """The suppression of each of these guardians' addresses that has one, by address."""
    emails = [g.email.strip().lower() for g in guardians if g.email]
    return {s.email: s for s in active_suppressions(emails)}


def contacts_to_fix(page: int):
    """Active students none of whose active guardians has a usable email, by school and class."""
    statement = (select(Student, School.name, SchoolClass.name)
                 .outerjoin(School, School.id == Student.school_id)
                 .outerjoin(SchoolClass, SchoolClass.id == Student.class_id)
                 .where(Student.active, ~_reachable_guardian())
                 .order_by(School.name, SchoolClass.name, Student.name, Student.id))
    total = db.session.scalar(select(func.count()).select_from(Student).where(Student.active, ~_reachable_guardian()))
    rows = db.session.execute(statement.limit(PER_PAGE).offset((page - 1) * PER_PAGE)).all()
    return rows, total


def unreached_students(job: NotificationJob, limit: int = 200):
    """For an ended notice to guardians: the students in its audience none of whose guardians it
    was delivered to (no address, opted out, suppressed, failed or bounced), by class; and how many.
    None when the question does not apply (still sending, a reminder, no guardians asked)."""
    if job.status not in JOB_ENDED or job.follow_up_of_id is not None or job.purged_at is not None:
        return None
    audience = Audience.from_dict(job.event.audience)
    if "guardians" not in audience.roles:
        return None
    delivered = exists().where(
        student_guardians.c.student_id == Student.id, student_guardians.c.guardian_id == Guardian.id,
        Notification.job_id == job.id, Notification.email == func.lower(func.trim(Guardian.email)),
        Notification.status == RecipientStatus.SENT)
    where = (students_in_scope(audience), ~delivered)
    rows = db.session.execute(
        select(Student, SchoolClass.name).outerjoin(SchoolClass, SchoolClass.id == Student.class_id)
        .where(*where).order_by(SchoolClass.name, Student.name, Student.id).limit(limit)).all()
    total = db.session.scalar(select(func.count()).select_from(Student).where(*where))
    return rows, total


class ContactError(ValueError):
    pass


def correct_email(guardian_id: int, value: str) -> Guardian:
    """Set a guardian's address by hand; an invalid one is refused with the reason."""
    guardian = db.session.get(Guardian, guardian_id)
    if guardian is None:
        raise LookupError(guardian_id)
    email, invalid = check_email(value)
    if invalid or not email:
        raise ContactError("Enter a valid email address, such as name@example.org.")
    guardian.email, guardian.invalid_email = email, None
    lift(email, "address corrected by the office")  # the office checked it: mail it again
    db.session.commit()
    roster_changed()
    return guardian


__all__ = ["PEOPLE", "ContactError", "NoticeSent", "bouncing_guardians", "contacts_to_fix", "correct_email",
           "notices_for", "search_classes", "search_people", "suppressions_for", "unreached_students"]
