"""8. Roster import: a OneRoster 1.1 bundle of 100,000 students (about 150,000 guardians, 5,000
teachers, 700,000 enrollments) imported with ``flask import-roster`` on SQLite and on PostgreSQL,
then imported again unchanged; wall time and the command's peak memory (its own maximum RSS)."""
import csv
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import psycopg

from .report import Figure, Report, parse_args, table
from .stack import BASE_DATABASE_URL, ROOT, _libpq

TARGET_SECONDS = {"SQLite": 90, "PostgreSQL": 180}
TARGET_MIB = 400
STUDENTS_PER_HOMEROOM = 25
SCHEDULED_PER_STUDENT = 6
SCHEDULED_SIZE = 25
SCHOOL_SIZE = 1_000
MANIFEST = [("manifest.version", "1.0"), ("oneroster.version", "1.1"), ("file.orgs", "bulk"),
            ("file.classes", "bulk"), ("file.users", "bulk"), ("file.enrollments", "bulk"),
            ("file.academicSessions", "absent"), ("file.courses", "absent"), ("file.demographics", "absent")]
USERS = ("sourcedId", "status", "dateLastModified", "enabledUser", "orgSourcedIds", "role", "username", "userIds",
         "givenName", "familyName", "middleName", "identifier", "email", "sms", "phone", "agentSourcedIds",
         "grades", "password", "metadata.language")
FIRST = ("Ada", "Ben", "Chloe", "David", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kenji", "Lena")
LAST = ("Adams", "Berg", "Costa", "Dubois", "Eze", "Fischer", "Garcia", "Haddad", "Ivanova", "Jensen", "Kim")
LANGUAGES = ("en", "en", "en", "es", "fr", "de", "ar", "zh-Hans")


def write_bundle(path: Path, students: int, seed: int = 7) -> dict[str, int]:
    """Write a district of ``students`` (1,000 to a school, 12 grades, homerooms of 25, five
    six scheduled classes each; families of 1-2 children with 1-2 guardians, 2% without email) as a zip."""
    rng = random.Random(seed)
    counts = {"students": 0, "guardians": 0, "teachers": 0, "enrollments": 0, "classes": 0}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        files = {name: open(folder / name, "w", newline="", encoding="utf-8")
                 for name in ("manifest.csv", "orgs.csv", "classes.csv", "users.csv", "enrollments.csv")}
        writers = {name: csv.writer(handle) for name, handle in files.items()}
        writers["manifest.csv"].writerows([("propertyName", "value"), *MANIFEST])
        writers["orgs.csv"].writerow(("sourcedId", "status", "dateLastModified", "name", "type", "identifier",
                                      "parentSourcedId"))
        writers["orgs.csv"].writerow(("district", "", "", "Bench District", "district", "BD", ""))
        writers["classes.csv"].writerow(("sourcedId", "status", "dateLastModified", "title", "grades",
                                         "courseSourcedId", "classCode", "classType", "location", "schoolSourcedId",
                                         "termSourcedIds", "subjects", "subjectCodes", "periods"))
        writers["users.csv"].writerow(USERS)
        writers["enrollments.csv"].writerow(("sourcedId", "status", "dateLastModified", "classSourcedId",
                                             "schoolSourcedId", "userSourcedId", "role", "primary", "beginDate",
                                             "endDate"))

        def enroll(class_sid, school, user, role):
            counts["enrollments"] += 1
            writers["enrollments.csv"].writerow((f"e{counts['enrollments']}", "", "", class_sid, school, user, role,
                                                 "false", "", ""))

        def teacher(school):
            counts["teachers"] += 1
            tid = f"t{counts['teachers']}"
            writers["users.csv"].writerow((tid, "", "", "true", school, "teacher", tid, "", rng.choice(FIRST),
                                           rng.choice(LAST), "", "", f"{tid}@staff.example.org", "", "", "", "", "",
                                           "en"))
            return tid

        for school_no in range(1, -(-students // SCHOOL_SIZE) + 1):
            school = f"school{school_no}"
            writers["orgs.csv"].writerow((school, "", "", f"School {school_no}", "school", f"S{school_no}",
                                          "district"))
            size = min(SCHOOL_SIZE, students - (school_no - 1) * SCHOOL_SIZE)
            per_grade = -(-size // 12)
            sids = []
            for grade in range(1, 13):
                in_grade = list(range(len(sids), min(size, len(sids) + per_grade)))
                homerooms = -(-len(in_grade) // STUDENTS_PER_HOMEROOM)
                rooms = []
                for room in range(homerooms):
                    counts["classes"] += 1
                    cid = f"{school}-h{grade}-{room}"
                    writers["classes.csv"].writerow((cid, "", "", f"Form {grade}-{room}", f"{grade:02d}", "",
                                                     f"{grade}{chr(65 + room % 26)}{room // 26 or ''}", "homeroom",
                                                     "", school, "", "", "", ""))
                    rooms.append(cid)
                    enroll(cid, school, teacher(school), "teacher")
                scheduled = []
                for set_no in range(max(1, len(in_grade) * SCHEDULED_PER_STUDENT // SCHEDULED_SIZE)):
                    counts["classes"] += 1
                    cid = f"{school}-s{grade}-{set_no}"
                    writers["classes.csv"].writerow((cid, "", "", f"Subject {set_no % 5} grade {grade}", f"{grade:02d}",
                                                     "", f"SUBJ{set_no % 5}-{grade}-{set_no // 5}", "scheduled", "",
                                                     school, "", "", "", ""))
                    scheduled.append(cid)
                    enroll(cid, school, teacher(school) if set_no % 20 == 0 else f"t{counts['teachers']}", "teacher")
                for index, _ in enumerate(in_grade):
                    counts["students"] += 1
                    sid = f"st{counts['students']}"
                    sids.append((sid, grade))
                    enroll(rooms[index // STUDENTS_PER_HOMEROOM], school, sid, "student")
                    for offset in range(SCHEDULED_PER_STUDENT):
                        enroll(scheduled[(index + offset * 7) % len(scheduled)], school, sid, "student")
            # Families: 1-3 children of this school share 1-2 guardians.
            position = 0
            while position < len(sids):
                children = sids[position:position + rng.choice((1, 1, 2))]
                position += len(children)
                surname = rng.choice(LAST)
                guardians = []
                for _ in range(rng.choice((1, 2, 2, 2, 2))):
                    counts["guardians"] += 1
                    gid = f"g{counts['guardians']}"
                    guardians.append(gid)
                    email = f"{gid}@families.example.org" if rng.random() > 0.02 else ""
                    writers["users.csv"].writerow((gid, "", "", "true", school, "parent", gid, "",
                                                   rng.choice(FIRST), surname, "", "", email, "", "", 
                                                   ",".join(c for c, _ in children), "", "", rng.choice(LANGUAGES)))
                for sid, grade in children:
                    writers["users.csv"].writerow((sid, "", "", "true", school, "student", sid, "",
                                                   rng.choice(FIRST), surname, "", "",
                                                   f"{sid}@students.example.org" if grade >= 7 else "", "", "",
                                                   ",".join(guardians), f"{grade:02d}", "", rng.choice(LANGUAGES)))
        for handle in files.values():
            handle.close()
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in files:
                archive.write(folder / name, name)
    return counts


def _env(data_dir: Path, database_url: str | None) -> dict:
    from school import config

    names = config.variable_names()
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("FLASK_")}
    env.update({"DATA_DIR": str(data_dir), "HUEY_NAME": "bench-roster", "PYTHONUNBUFFERED": "1"})
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def _flask(env: dict, *args: str) -> tuple[float, int, str]:
    """Run ``flask --app app ARGS``; (seconds, peak RSS in KiB, output)."""
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = process.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed:\n{output}")
    return seconds, usage.ru_maxrss, output


def _measure(name: str, bundle: Path, env: dict) -> list:
    _flask(env, "db", "upgrade")
    first = _flask(env, "import-roster", str(bundle))
    again = _flask(env, "import-roster", str(bundle))
    assert "no changes" in again[2], again[2]
    print(first[2].splitlines()[0:9], flush=True)
    return [name, first[0], first[1], again[0], again[1]]


def run(report: Report, students: int) -> list[Figure]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-roster-") as work:
        work = Path(work)
        bundle = work / "district.zip"
        started = time.monotonic()
        counts = write_bundle(bundle, students)
        print(f"bundle written in {time.monotonic() - started:.1f} s: {counts}, "
              f"{bundle.stat().st_size / 1e6:.1f} MB", flush=True)
        rows.append(_measure("SQLite", bundle, _env(work / "sqlite", None)))
        database = f"bench_roster_{secrets.token_hex(4)}"
        with psycopg.connect(_libpq(BASE_DATABASE_URL), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        try:
            url = BASE_DATABASE_URL.rsplit("/", 1)[0] + "/" + database
            rows.append(_measure("PostgreSQL", bundle, _env(work / "pg", url)))
        finally:
            with psycopg.connect(_libpq(BASE_DATABASE_URL), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    lines = [
        f"A generated OneRoster 1.1 bundle (zip, {counts['students']:,} students, {counts['guardians']:,} guardians, "
        f"{counts['teachers']:,} teachers, {counts['classes']:,} classes, {counts['enrollments']:,} enrollments) "
        f"imported into an empty database with `flask --app app import-roster district.zip`, then imported again "
        f"unchanged (\"no changes\"). Times are the whole command (start-up included); memory is its peak RSS.", "",
        *table(["Database", "Import", "Peak memory", "Re-import unchanged", "Peak memory"],
               [[name, f"{a:.1f} s", f"{m1 / 1024:.0f} MiB", f"{b:.1f} s", f"{m2 / 1024:.0f} MiB"]
                for name, a, m1, b, m2 in rows]),
    ]
    figures = []
    for name, first, mem1, again, mem2 in rows:
        target = TARGET_SECONDS[name]
        figures.append(Figure("8. Roster import", f"{counts['students']:,} students on {name}", f"{first:.0f} s",
                              f"≤ {target} s", first <= target))
        figures.append(Figure("8. Roster import", f"re-import unchanged on {name}", f"{again:.0f} s",
                              f"≤ {target // 2} s", again <= target / 2))
        peak = max(mem1, mem2) / 1024
        figures.append(Figure("8. Roster import", f"peak memory on {name}", f"{peak:.0f} MiB", f"< {TARGET_MIB} MiB",
                              peak < TARGET_MIB))
    report.section("8. Roster import: a 100,000-student OneRoster bundle", lines, figures)
    return figures


def main(argv=None) -> None:
    args = parse_args(__doc__, argv, students=100_000)
    report = Report("bench.roster_import", sys.argv[1:] if argv is None else argv, record=not args.no_record)
    report.header(["SQLite", "PostgreSQL"])
    run(report, args.students)
    report.summary()


if __name__ == "__main__":
    main()
