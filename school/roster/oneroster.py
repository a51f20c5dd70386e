"""OneRoster 1.1 CSV: ``manifest.csv`` and the files it lists, read into an ``IncomingRoster``.

Read: orgs (districts and schools), classes (``classType`` homeroom or scheduled, ``classCode`` as
the class's name in audiences), users (students, teachers, and guardians from the roles guardian,
parent and relative; ``agentSourcedIds`` links students and guardians; ``metadata.language``), and
enrollments of students and teachers. Other files and columns are ignored.
"""
from collections.abc import Callable
from sys import intern

from .bundle import Bundle, BundleError, Problem, Problems, check_email, check_language
from .incoming import MODES, PEOPLE, IncomingRoster, parse_grade

GUARDIAN_ROLES = ("guardian", "parent", "relative")
ROLE_KIND = {"student": "students", "teacher": "teachers", **{r: "guardians" for r in GUARDIAN_ROLES}}
REQUIRED = {
    "orgs.csv": ("sourcedId", "name", "type"),
    "classes.csv": ("sourcedId", "title", "classType", "schoolSourcedId"),
    "users.csv": ("sourcedId", "orgSourcedIds", "role", "givenName", "familyName"),
    "enrollments.csv": ("sourcedId", "classSourcedId", "schoolSourcedId", "userSourcedId", "role"),
}
# Every kind each file describes, so a file's mode applies to them all.
FILE_KINDS = {"orgs.csv": ("districts", "schools"), "classes.csv": ("classes",), "users.csv": PEOPLE}

Known = Callable[[str], set[str]]


def is_oneroster(bundle: Bundle) -> bool:
    return bundle.has("manifest.csv")


def read_manifest(bundle: Bundle) -> dict[str, str]:
    """File name -> mode for the four files the roster needs."""
    modes, problems = {}, []
    for line, row in bundle.rows("manifest.csv", ("propertyName", "value")):
        name, value = row["propertyName"].strip(), row["value"].strip().lower()
        if not name.startswith("file."):
            continue
        file = name[len("file."):] + ".csv"
        if file not in REQUIRED:
            continue
        if value not in MODES:
            problems.append(Problem("manifest.csv", line, f"{name} is {value!r}; use bulk, delta or absent"))
        modes[file] = value
    for file in REQUIRED:
        if modes.get(file, "absent") != "absent" and not bundle.has(file):
            problems.append(Problem("manifest.csv", None, f"{file} is listed as {modes[file]} but is not in the bundle"))
    if problems:
        raise BundleError(problems)
    return modes


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def read(bundle: Bundle, known: Known, problems: Problems) -> IncomingRoster:
    """Read the bundle; ``known(kind)`` gives the source ids already in the database, which a delta
    file may refer to without sending them again."""
    roster = IncomingRoster("OneRoster 1.1")
    modes = read_manifest(bundle)
    for file, kinds in FILE_KINDS.items():
        for kind in kinds:
            roster.sections[kind].mode = modes.get(file, "absent")
    if modes.get("users.csv", "absent") != "absent":
        roster.guardianship.mode = modes["users.csv"]
    if modes.get("enrollments.csv", "absent") != "absent":
        for links in (roster.teaching, roster.attending, roster.homerooms):
            links.mode = modes["enrollments.csv"]

    def reachable(kind: str) -> set[str] | dict:
        """Source ids a row may refer to: those sent (or kept after a bad row), and for a file not sent
        whole, the database's."""
        section = roster.sections[kind]
        sent = section.records.keys()
        if section.mode == "bulk":
            return sent | section.kept if section.kept else sent
        return set(sent) | section.kept | (known(kind) - section.deleted)

    if modes.get("orgs.csv", "absent") != "absent":
        _read_orgs(bundle, roster, problems)
    if modes.get("classes.csv", "absent") != "absent":
        _read_classes(bundle, roster, problems, reachable("schools"))
    if modes.get("users.csv", "absent") != "absent":
        _read_users(bundle, roster, problems, reachable)
    if modes.get("enrollments.csv", "absent") != "absent":
        _read_enrollments(bundle, roster, problems, reachable, known)
    return roster


def _deleted(row: dict) -> bool:
    return row.get("status", "").strip().lower() == "tobedeleted"


def _take(section, file: str, line: int, sid: str, record: tuple, problems: Problems) -> bool:
    if sid in section.records:
        problems.add(file, line, f"sourcedId {sid} appears twice; the first row is kept")
        return False
    section.records[sid] = record
    return True


def _read_orgs(bundle: Bundle, roster: IncomingRoster, problems: Problems) -> None:
    districts, schools = roster.sections["districts"], roster.sections["schools"]
    parents = {}
    for line, row in bundle.rows("orgs.csv", REQUIRED["orgs.csv"]):
        sid, kind = row["sourcedId"].strip(), row["type"].strip().lower()
        if not sid:
            problems.add("orgs.csv", line, "sourcedId is empty")
            continue
        section = {"district": districts, "school": schools}.get(kind)
        if section is None:
            continue
        if _deleted(row):
            section.deleted.add(sid)
            continue
        name = row["name"].strip() or sid
        if kind == "district":
            _take(districts, "orgs.csv", line, sid, (name,), problems)
        elif _take(schools, "orgs.csv", line, sid, (name, row.get("identifier", "").strip() or None, None), problems):
            parents[sid] = (line, row.get("parentSourcedId", "").strip())
    for sid, (line, parent) in parents.items():
        if parent and parent in districts.records:
            name, identifier, _ = schools.records[sid]
            schools.records[sid] = (name, identifier, parent)


def _read_classes(bundle: Bundle, roster: IncomingRoster, problems: Problems, schools) -> None:
    classes = roster.sections["classes"]
    for line, row in bundle.rows("classes.csv", REQUIRED["classes.csv"]):
        sid = intern(row["sourcedId"].strip())
        if not sid:
            problems.add("classes.csv", line, "sourcedId is empty")
            continue
        if _deleted(row):
            classes.deleted.add(sid)
            continue
        school = intern(row["schoolSourcedId"].strip())
        if school not in schools:
            classes.kept.add(sid)
            problems.add("classes.csv", line, f"class {sid} refers to unknown school {school!r}; row skipped")
            continue
        kind = row["classType"].strip().lower()
        if kind not in ("homeroom", "scheduled"):
            problems.add("classes.csv", line, f"classType {kind!r} is neither homeroom nor scheduled; taken as scheduled")
            kind = "scheduled"
        title = row["title"].strip()
        code = row.get("classCode", "").strip() or title or sid
        grades = _split(row.get("grades", ""))
        grade, understood = parse_grade(grades[0]) if grades else (None, True)
        if not understood:
            problems.add("classes.csv", line, f"unknown grade {grades[0]!r}; class kept without a grade")
        _take(classes, "classes.csv", line, sid, (school, code[:100], title[:200] or None, kind, grade), problems)


def _read_users(bundle: Bundle, roster: IncomingRoster, problems: Problems, reachable) -> None:
    sections = roster.sections
    schools = reachable("schools")
    agents: list[tuple[str, str, str, int]] = []  # (kind, sid, agent sid, line)
    for line, row in bundle.rows("users.csv", REQUIRED["users.csv"]):
        kind = ROLE_KIND.get(row["role"].strip().lower())
        if kind is None:
            continue  # administrators, aides, proctors: not reached by notices
        roster.users_seen += 1
        sid = intern(row["sourcedId"].strip())
        if not sid:
            roster.users_refused += 1
            problems.add("users.csv", line, "sourcedId is empty; row skipped")
            continue
        if _deleted(row):
            sections[kind].deleted.add(sid)
            continue
        name = f"{row['givenName'].strip()} {row['familyName'].strip()}".strip()
        if not name:
            roster.users_refused += 1
            sections[kind].kept.add(sid)
            problems.add("users.csv", line, f"user {sid} has no name; row skipped")
            continue
        orgs = [o for o in _split(row["orgSourcedIds"]) if o in schools]
        if kind == "students" and not orgs:
            roster.users_refused += 1
            sections[kind].kept.add(sid)
            problems.add("users.csv", line, f"student {sid} belongs to no known school "
                                            f"({row['orgSourcedIds'].strip() or 'orgSourcedIds is empty'}); row skipped")
            continue
        email, invalid = check_email(row.get("email", ""))
        if invalid:
            problems.add("users.csv", line, f"invalid email {invalid!r} for {sid}; kept as needs fixing")
        phone = (row.get("sms", "").strip() or row.get("phone", "").strip())[:40] or None
        raw_language = row.get("metadata.language", "")
        language = check_language(raw_language)
        if raw_language.strip() and language is None:
            problems.add("users.csv", line, f"language {raw_language.strip()!r} is not a BCP 47 code; ignored")
        contact = (name[:200], email, invalid, phone, language and intern(language))
        if kind == "students":
            grades = _split(row.get("grades", ""))
            grade, understood = parse_grade(grades[0]) if grades else (None, True)
            if not understood:
                problems.add("users.csv", line, f"unknown grade {grades[0]!r}; student kept without a grade")
            record = contact + (grade, intern(orgs[0]))
        elif kind == "teachers":
            record = contact + (intern(orgs[0]) if orgs else None,)
        else:
            record = contact
        if not _take(sections[kind], "users.csv", line, sid, record, problems):
            continue
        if kind in ("students", "guardians"):
            if kind == "students":
                roster.guardianship.replaced.add(sid)
            for agent in _split(row.get("agentSourcedIds", "")):
                agents.append((kind, sid, intern(agent), line))
    students, guardians = reachable("students"), reachable("guardians")
    for kind, sid, agent, line in agents:
        pair = (sid, agent) if kind == "students" else (agent, sid)
        if pair[0] in students and pair[1] in guardians:
            roster.guardianship.pairs.add(pair)
        elif kind == "students" and agent in students:
            pass  # a student's agent may be another student (a sibling link): not a guardian
        else:
            problems.add("users.csv", line, f"agentSourcedIds of {sid} names unknown "
                                            f"{'guardian' if kind == 'students' else 'student'} {agent!r}; link skipped")


def _read_enrollments(bundle: Bundle, roster: IncomingRoster, problems: Problems, reachable, known: Known) -> None:
    classes, students, teachers = reachable("classes"), reachable("students"), reachable("teachers")
    kinds = {sid: record[3] for sid, record in roster.sections["classes"].records.items()}
    if roster.sections["classes"].mode != "bulk":
        kinds = {**{sid: "homeroom" for sid in known("homerooms")}, **kinds}
    homerooms, attending, teaching = roster.homerooms, roster.attending, roster.teaching
    for line, row in bundle.rows("enrollments.csv", REQUIRED["enrollments.csv"]):
        role = row["role"].strip().lower()
        if role not in ("student", "teacher"):
            continue
        class_sid, user_sid = intern(row["classSourcedId"].strip()), intern(row["userSourcedId"].strip())
        if class_sid not in classes:
            problems.add("enrollments.csv", line, f"enrollment {row['sourcedId'].strip()} refers to unknown class "
                                                  f"{class_sid!r}; row skipped")
            continue
        if user_sid not in (students if role == "student" else teachers):
            problems.add("enrollments.csv", line, f"enrollment {row['sourcedId'].strip()} refers to unknown {role} "
                                                  f"{user_sid!r}; row skipped")
            continue
        deleted = _deleted(row)
        if role == "teacher":
            (teaching.removed if deleted else teaching.pairs).add((class_sid, user_sid))
        elif kinds.get(class_sid) == "homeroom":
            (homerooms.removed if deleted else homerooms.pairs).add((user_sid, class_sid))
        else:
            (attending.removed if deleted else attending.pairs).add((class_sid, user_sid))
    for student, rooms in homerooms.pairs.by_left.items():
        distinct = sorted(set(rooms))
        if len(distinct) > 1:
            problems.add("enrollments.csv", None, f"student {student} is enrolled in {len(distinct)} homerooms "
                                                  f"({', '.join(distinct)}); {distinct[0]} is kept")
        rooms[:] = distinct[:1]
