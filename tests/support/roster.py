"""OneRoster bundles written by hand for the roster tests: two schools of one district.

    north (identifier N): homerooms 7A (Tom), 7B (Una); scheduled MATH7-1 (Tom)
    south (identifier S): homerooms 7A (Sam), 8A (Sam); scheduled ART-1 (Sam)

    Ana   north 7A, MATH7-1   ana@       guardian Maria (maria@), who is also Ben's
    Ben   north 7A            no email   guardians Maria, Nina (invalid address: needs fixing)
    Cara  north 7B, MATH7-1   cara@      guardians Hong (no email), Paul (paul@)
    Dan   south 7A, ART-1     dan@       guardian Paul (paul@): Cara's and Dan's, across schools
    Eve   south 8A, ART-1     eve@       guardian Zoe (zoe@)
"""
import csv
import zipfile
from pathlib import Path

MANIFEST = [("manifest.version", "1.0"), ("oneroster.version", "1.1"), ("file.academicSessions", "absent"),
            ("file.categories", "absent"), ("file.classes", "bulk"), ("file.courses", "absent"),
            ("file.demographics", "absent"), ("file.enrollments", "bulk"), ("file.orgs", "bulk"),
            ("file.users", "bulk"), ("source.systemName", "Test SIS")]
ORGS = ("sourcedId", "status", "dateLastModified", "name", "type", "identifier", "parentSourcedId")
CLASSES = ("sourcedId", "status", "dateLastModified", "title", "grades", "courseSourcedId", "classCode",
           "classType", "location", "schoolSourcedId", "termSourcedIds", "subjects", "subjectCodes", "periods")
USERS = ("sourcedId", "status", "dateLastModified", "enabledUser", "orgSourcedIds", "role", "username", "userIds",
         "givenName", "familyName", "middleName", "identifier", "email", "sms", "phone", "agentSourcedIds",
         "grades", "password", "metadata.language")
ENROLLMENTS = ("sourcedId", "status", "dateLastModified", "classSourcedId", "schoolSourcedId", "userSourcedId",
               "role", "primary", "beginDate", "endDate")

ANA, CARA, DAN, EVE = "ana@students.example.org", "cara@students.example.org", "dan@students.example.org", \
    "eve@students.example.org"
MARIA, PAUL, ZOE = "maria@families.example.org", "paul@families.example.org", "zoe@families.example.org"
TOM, UNA, SAM = "tom@staff.example.org", "una@staff.example.org", "sam@staff.example.org"
MARIA_NEW, FINN_PARENT = "maria.silva@families.example.org", "olga@families.example.org"


def first_bundle() -> dict[str, list[dict]]:
    orgs = [
        {"sourcedId": "d1", "name": "River District", "type": "district", "identifier": "RD"},
        {"sourcedId": "s-north", "name": "North School", "type": "school", "identifier": "N", "parentSourcedId": "d1"},
        {"sourcedId": "s-south", "name": "South School", "type": "school", "identifier": "S", "parentSourcedId": "d1"},
    ]
    classes = [
        {"sourcedId": "c-n7a", "title": "Form 7A", "grades": "07", "classCode": "7A", "classType": "homeroom",
         "schoolSourcedId": "s-north"},
        {"sourcedId": "c-n7b", "title": "Form 7B", "grades": "07", "classCode": "7B", "classType": "homeroom",
         "schoolSourcedId": "s-north"},
        {"sourcedId": "c-math", "title": "Maths 7 set 1", "grades": "07", "classCode": "MATH7-1",
         "classType": "scheduled", "schoolSourcedId": "s-north"},
        {"sourcedId": "c-s7a", "title": "Form 7A", "grades": "07", "classCode": "7A", "classType": "homeroom",
         "schoolSourcedId": "s-south"},
        {"sourcedId": "c-s8a", "title": "Form 8A", "grades": "08", "classCode": "8A", "classType": "homeroom",
         "schoolSourcedId": "s-south"},
        {"sourcedId": "c-art", "title": "Art", "grades": "07,08", "classCode": "ART-1", "classType": "scheduled",
         "schoolSourcedId": "s-south"},
    ]

    def user(sid, role, given, family, org, email="", agents="", grades="", language=""):
        return {"sourcedId": sid, "enabledUser": "true", "orgSourcedIds": org, "role": role, "username": sid,
                "givenName": given, "familyName": family, "email": email, "agentSourcedIds": agents,
                "grades": grades, "metadata.language": language}

    users = [
        user("st-ana", "student", "Ana", "Silva", "s-north", ANA, "g-maria", "07", "pt"),
        user("st-ben", "student", "Ben", "Silva", "s-north", "", "g-maria,g-nina", "07"),
        user("st-cara", "student", "Cara", "Li", "s-north", CARA, "g-hong,g-paul", "07"),
        user("st-dan", "student", "Dan", "Roy", "s-south", DAN, "g-paul", "07"),
        user("st-eve", "student", "Eve", "Kim", "s-south", EVE, "", "08"),
        user("g-maria", "parent", "Maria", "Silva", "s-north", MARIA, "st-ana,st-ben", language="pt"),
        user("g-nina", "relative", "Nina", "Silva", "s-north", "nina(at)example.org", "st-ben"),
        user("g-hong", "guardian", "Hong", "Li", "s-north", "", "st-cara", language="zh-Hans"),
        user("g-paul", "parent", "Paul", "Roy", "s-north,s-south", PAUL, "st-cara,st-dan"),
        user("g-zoe", "parent", "Zoe", "Kim", "s-south", ZOE, "st-eve"),
        user("t-tom", "teacher", "Tom", "Baker", "s-north", TOM),
        user("t-una", "teacher", "Una", "Reed", "s-north", UNA),
        user("t-sam", "teacher", "Sam", "Khan", "s-south", SAM),
        user("a-admin", "administrator", "Ada", "Admin", "d1", "ada@example.org"),
    ]
    enrollments = []
    for class_sid, school, people in [
        ("c-n7a", "s-north", [("st-ana", "student"), ("st-ben", "student"), ("t-tom", "teacher")]),
        ("c-n7b", "s-north", [("st-cara", "student"), ("t-una", "teacher")]),
        ("c-math", "s-north", [("st-ana", "student"), ("st-cara", "student"), ("t-tom", "teacher")]),
        ("c-s7a", "s-south", [("st-dan", "student"), ("t-sam", "teacher")]),
        ("c-s8a", "s-south", [("st-eve", "student"), ("t-sam", "teacher")]),
        ("c-art", "s-south", [("st-dan", "student"), ("st-eve", "student"), ("t-sam", "teacher")]),
    ]:
        for person, role in people:
            enrollments.append({"sourcedId": f"e-{class_sid}-{person}", "classSourcedId": class_sid,
                                "schoolSourcedId": school, "userSourcedId": person, "role": role,
                                "primary": "true" if role == "teacher" else "false"})
    return {"orgs.csv": orgs, "classes.csv": classes, "users.csv": users, "enrollments.csv": enrollments}


def second_bundle() -> dict[str, list[dict]]:
    """Maria's address changes, Ben leaves, Finn joins north 7A with a new guardian, Olga."""
    files = first_bundle()
    users = [u for u in files["users.csv"] if u["sourcedId"] not in ("st-ben", "g-nina")]
    for u in users:
        if u["sourcedId"] == "g-maria":
            u["email"], u["agentSourcedIds"] = MARIA_NEW, "st-ana"
    users.append({"sourcedId": "st-finn", "orgSourcedIds": "s-north", "role": "student", "givenName": "Finn",
                  "familyName": "Berg", "agentSourcedIds": "g-olga", "grades": "07"})
    users.append({"sourcedId": "g-olga", "orgSourcedIds": "s-north", "role": "guardian", "givenName": "Olga",
                  "familyName": "Berg", "email": FINN_PARENT, "agentSourcedIds": "st-finn"})
    files["users.csv"] = users
    enrollments = [e for e in files["enrollments.csv"] if e["userSourcedId"] != "st-ben"]
    enrollments.append({"sourcedId": "e-finn", "classSourcedId": "c-n7a", "schoolSourcedId": "s-north",
                        "userSourcedId": "st-finn", "role": "student"})
    files["enrollments.csv"] = enrollments
    return files


HEADERS = {"orgs.csv": ORGS, "classes.csv": CLASSES, "users.csv": USERS, "enrollments.csv": ENROLLMENTS}


def write_bundle(folder: Path, files: dict[str, list[dict]], manifest=MANIFEST, zip_name: str | None = None,
                 headers: dict | None = None, encoding: str = "utf-8") -> Path:
    """Write the files (and the manifest) into ``folder``; zipped into ``zip_name`` when given."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "manifest.csv", "w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(("propertyName", "value"))
        writer.writerows(manifest)
    for name, rows in files.items():
        columns = (headers or {}).get(name, HEADERS.get(name))
        with open(folder / name, "w", newline="", encoding=encoding) as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({c: row.get(c, "") for c in columns})
    if zip_name is None:
        return folder
    archive = folder.parent / zip_name
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
    return archive
