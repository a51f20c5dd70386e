"""The app's own simple CSV, for a school that keeps its people in a spreadsheet.

``students.csv``: one row per student, with their homeroom, any scheduled classes and up to two
guardians; ``teachers.csv`` (optional): one row per teacher with the classes they teach. Every file
is a whole list (bulk): whoever is missing from it leaves. The format is described in
docs/roster.md, with a sample in docs/samples/.
"""
from .bundle import Bundle, Problems, check_email, check_language
from .incoming import IncomingRoster, parse_grade

STUDENTS = "students.csv"
TEACHERS = "teachers.csv"
STUDENT_COLUMNS = ("student_id", "first_name", "last_name", "grade", "class")
TEACHER_COLUMNS = ("teacher_id", "first_name", "last_name", "email", "classes")
DEFAULT_SCHOOL = "school"


def is_simple(bundle: Bundle) -> bool:
    return bundle.has(STUDENTS)


def _codes(value: str) -> list[str]:
    return [v.strip()[:100] for v in value.replace(",", ";").split(";") if v.strip()]


def _school(roster: IncomingRoster, row: dict) -> str:
    name = row.get("school", "").strip() or DEFAULT_SCHOOL
    sid = f"school:{name.lower()}"
    roster.sections["schools"].records.setdefault(sid, (name if name != DEFAULT_SCHOOL else "School", name, None))
    return sid


def _class(roster: IncomingRoster, school: str, code: str, kind: str, grade: int | None) -> str:
    sid = f"class:{school[len('school:'):]}:{code.lower()}"
    known = roster.sections["classes"].records.get(sid)
    if known is None or (kind == "homeroom" and known[3] != "homeroom"):
        roster.sections["classes"].records[sid] = (school, code, None, kind, grade)
    return sid


def _contact(file: str, line: int, row: dict, prefix: str, problems: Problems, name: str) -> tuple:
    email, invalid = check_email(row.get(f"{prefix}email", ""))
    if invalid:
        problems.add(file, line, f"invalid email {invalid!r} for {name}; kept as needs fixing")
    raw_language = row.get(f"{prefix}language", "").strip()
    language = check_language(raw_language)
    if raw_language and language is None:
        problems.add(file, line, f"language {raw_language!r} is not a BCP 47 code; ignored")
    phone = row.get(f"{prefix}phone", "").strip()[:40] or None
    return email, invalid, phone, language


def read(bundle: Bundle, problems: Problems) -> IncomingRoster:
    roster = IncomingRoster("simple CSV")
    for section in roster.sections.values():
        section.mode = "bulk"
    roster.sections["districts"].mode = "absent"
    for links in (roster.guardianship, roster.teaching, roster.attending, roster.homerooms):
        links.mode = "bulk"
    students, guardians = roster.sections["students"], roster.sections["guardians"]
    for line, row in bundle.rows(STUDENTS, STUDENT_COLUMNS):
        roster.users_seen += 1
        sid = row["student_id"].strip()
        name = f"{row['first_name'].strip()} {row['last_name'].strip()}".strip()
        if not sid or not name:
            roster.users_refused += 1
            problems.add(STUDENTS, line, "student_id and a name are required; row skipped")
            continue
        if sid in students.records:
            roster.users_refused += 1
            problems.add(STUDENTS, line, f"student_id {sid} appears twice; the first row is kept")
            continue
        grade, understood = parse_grade(row["grade"])
        if not understood:
            problems.add(STUDENTS, line, f"unknown grade {row['grade'].strip()!r}; student kept without a grade")
        school = _school(roster, row)
        students.records[sid] = (name[:200], *_contact(STUDENTS, line, row, "student_", problems, name), grade, school)
        homeroom = row["class"].strip()[:100]
        if homeroom:
            roster.homerooms.pairs.add((sid, _class(roster, school, homeroom, "homeroom", grade)))
        for code in _codes(row.get("classes", "")):
            roster.attending.pairs.add((_class(roster, school, code, "scheduled", grade), sid))
        for n in (1, 2):
            prefix = f"guardian{n}_"
            guardian_name = row.get(f"{prefix}name", "").strip()
            if not guardian_name and not row.get(f"{prefix}email", "").strip():
                continue
            contact = _contact(STUDENTS, line, row, prefix, problems, guardian_name or f"guardian {n} of {name}")
            # Siblings' rows name the same guardian: one address is one guardian.
            key = (contact[0] or contact[1] or "").lower()
            gid = f"guardian:{key}" if key else f"guardian:{sid}:{n}"
            guardians.records.setdefault(gid, ((guardian_name or key)[:200], *contact))
            roster.guardianship.pairs.add((sid, gid))
    if bundle.has(TEACHERS):
        _read_teachers(bundle, roster, problems)
    return roster


def _read_teachers(bundle: Bundle, roster: IncomingRoster, problems: Problems) -> None:
    teachers, classes = roster.sections["teachers"], roster.sections["classes"].records
    for line, row in bundle.rows(TEACHERS, TEACHER_COLUMNS):
        roster.users_seen += 1
        sid = row["teacher_id"].strip()
        name = f"{row['first_name'].strip()} {row['last_name'].strip()}".strip()
        if not sid or not name or sid in teachers.records:
            roster.users_refused += 1
            problems.add(TEACHERS, line, "teacher_id (once) and a name are required; row skipped")
            continue
        school = _school(roster, row)
        teachers.records[sid] = (name[:200], *_contact(TEACHERS, line, row, "", problems, name), school)
        for code in _codes(row["classes"]):
            class_sid = f"class:{school[len('school:'):]}:{code.lower()}"
            if class_sid not in classes:
                problems.add(TEACHERS, line, f"{name} teaches unknown class {code!r} (no student is in it); skipped")
                continue
            roster.teaching.pairs.add((class_sid, sid))
