"""Random bodies thrown at event creation (the JSON API and the form), on SQLite and PostgreSQL.

Whatever arrives, the answer is never a 500: a valid event is created (its event and job written),
and anything else is refused with a 4xx that says why, with nothing written. That includes JSON
nested deeper than the parser goes, dates outside the school's horizon, and local times that
daylight saving time skips (refused) or repeats (the first one taken, with a note).
"""
import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from school.events.services import latest_date
from tests.support.pages import csrf_token

pytestmark = pytest.mark.slow

EXAMPLES = 1000
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Any text, lone surrogates and control characters (NUL …) included: JSON can carry them all.
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
form_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)  # what a form can carry
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=8)

offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
moments = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
        lambda d: d.isoformat(timespec="minutes")),
    st.builds(lambda d, tz: d.replace(tzinfo=tz).isoformat(),
              st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)), offsets),
    st.sampled_from(["2031-03-12T18:00:00Z", "2031-03-12T20:00", "2031-02-30T10:00", "tomorrow", "", "T", "Z"]),
)
# Valid events start from 2000 to ten years ahead; leave room for their length before the horizon.
LATEST_START = latest_date(datetime.now()) - timedelta(days=4)
GRADES = list(range(1, 13))  # the seeded school has one class per grade: 1A … 12A
CLASSES = [f"{grade}A" for grade in GRADES]
ROLES = ["guardians", "students", "teachers"]


@st.composite
def valid_events(draw) -> dict:
    """An event the app must accept: sensible text, a start before its end, a real audience."""
    plain = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=60)
    lines = st.text(st.characters(exclude_categories=("Cc", "Cs"), include_characters="\r\n\t"), max_size=200)
    start = draw(st.datetimes(min_value=datetime(2000, 1, 2), max_value=LATEST_START))
    end = start + timedelta(minutes=draw(st.integers(0, 4000)))
    return {
        "title": draw(plain.filter(str.strip)),
        "description": draw(lines),
        "location": draw(plain),
        "starts_at": start.isoformat(timespec="minutes") + "Z",
        "ends_at": end.isoformat(timespec="minutes") + "Z",
        "priority": draw(st.sampled_from(["normal", "urgent"])),
        "audience": {"roles": draw(st.lists(st.sampled_from(ROLES), min_size=1, max_size=3, unique=True)),
                     "grades": draw(st.lists(st.sampled_from(GRADES), max_size=3, unique=True)),
                     "classes": draw(st.lists(st.sampled_from(CLASSES), max_size=2, unique=True))},
    }


@st.composite
def mutated(draw, bodies, values) -> dict:
    """A valid body with one to three fields (top level or in the audience) replaced or removed."""
    body = draw(bodies)
    for _ in range(draw(st.integers(1, 3))):
        target = body["audience"] if draw(st.booleans()) and isinstance(body.get("audience"), dict) else body
        key = draw(st.sampled_from(sorted(target) + ["unknown"]))
        if draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = draw(values)
    return body


event_bodies = st.one_of(valid_events(), mutated(valid_events(), st.one_of(json_values, moments)))
api_bodies = st.one_of(
    event_bodies.map(lambda body: json.dumps(body).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=80),
)


def as_form(body: dict) -> dict:
    """The fields a browser would send for this event: every value a string."""
    audience = body.pop("audience", {}) if isinstance(body.get("audience"), dict) else {}
    form = {key: value for key, value in body.items() if key != "audience"}
    for key in ("roles", "grades", "classes"):
        if key in audience:
            value = audience[key]
            form[key] = [str(v) for v in value] if isinstance(value, list) else str(value)
    for key in ("starts_at", "ends_at"):  # the form's datetime-local fields have no zone
        if isinstance(form.get(key), str):
            form[key] = form[key].removesuffix("Z")
    return {key: value if isinstance(value, list) else str(value) for key, value in form.items()}


form_bodies = st.one_of(valid_events(), mutated(valid_events(), st.one_of(form_text, moments))).map(as_form)


def rows(school) -> tuple[int, int]:
    return school.scalar("SELECT count(*) FROM events"), school.scalar("SELECT count(*) FROM notification_jobs")


@pytest.fixture(params=["sqlite", "postgres"])
def school(request, make_school):
    return make_school(students=24, database=request.param)


def test_random_bodies_at_the_api_never_fail_and_write_only_valid_events(school):
    client = school.app.test_client()
    headers = {"Authorization": f"Bearer {school.token}", "Content-Type": "application/json"}
    seen = {"created": 0, "refused": 0}

    @FUZZ
    @given(body=api_bodies)
    def throw(body: bytes):
        before = rows(school)
        response = client.post("/api/events", data=body, headers=headers)
        assert response.status_code < 500, (body, response.get_data(as_text=True))
        assert response.is_json
        if response.status_code == 202:
            assert rows(school) == (before[0] + 1, before[1] + 1)
            assert {"event_id", "job_id", "job_url"} <= set(response.json)
            seen["created"] += 1
        else:
            assert response.status_code in (400, 413, 415, 422), response.status_code
            assert "error" in response.json
            assert rows(school) == before, "a refused body wrote something"
            seen["refused"] += 1

    throw()
    assert sum(seen.values()) >= EXAMPLES
    assert seen["created"] and seen["refused"], seen  # both kinds were really tried


def test_random_forms_never_fail_and_write_only_valid_events(school):
    client = school.admin().client
    token = csrf_token(client.get("/events/new").data)
    seen = {"created": 0, "refused": 0}

    @FUZZ
    @given(form=form_bodies)
    def throw(form: dict):
        before = rows(school)
        response = client.post("/events/new", data={**form, "csrf_token": token})
        assert response.status_code < 500, (form, response.get_data(as_text=True))
        if response.status_code == 302:
            assert rows(school) == (before[0] + 1, before[1] + 1)
            seen["created"] += 1
        else:
            assert response.status_code == 422, response.status_code  # the form again, with its messages
            assert b"Please correct the marked fields" in response.data
            assert rows(school) == before, "a refused form wrote something"
            seen["refused"] += 1

    throw()
    assert sum(seen.values()) >= EXAMPLES
    assert seen["created"] and seen["refused"], seen


# --- what a parser's depth and the calendar make of input --------------------------------------

DEPTHS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
openers = st.sampled_from([b"[", b'{"a":', b'{"audience":', b"[1,"])


@st.composite
def nested_bodies(draw) -> bytes:
    """JSON nested 0 to 120,000 deep, closed or not, past or within the body size limit."""
    opener, depth = draw(openers), draw(st.integers(0, 120_000))
    closer = b"]" if opener.startswith(b"[") else b"}"
    return opener * depth + b"1" + (closer * depth if draw(st.booleans()) else b"")


def test_json_nested_to_any_depth_is_never_a_500(make_school):
    school = make_school()
    client = school.app.test_client()
    headers = {"Authorization": f"Bearer {school.token}", "Content-Type": "application/json"}

    @DEPTHS
    @given(body=nested_bodies())
    def throw(body: bytes):
        response = client.post("/api/events", data=body, headers=headers)
        assert response.status_code in (400, 413, 422), (len(body), response.status_code)
        assert "error" in response.json

    throw()
    assert rows(school) == (0, 0)


BERLIN = ZoneInfo("Europe/Berlin")
# The nights Berlin's clocks change (last Sunday of March and of October), 2000 to 2036.
CHANGES = [datetime(year, month, 31) - timedelta(days=(datetime(year, month, 31).weekday() + 1) % 7)
           for year in range(2000, 2037) for month in (3, 10)]
near_changes = st.builds(lambda day, minutes: day + timedelta(minutes=minutes),
                         st.sampled_from(CHANGES), st.integers(0, 4 * 60))
local_times = st.one_of(near_changes, st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))


def expected_reading(naive: datetime) -> tuple[str, datetime | None]:
    """What the school should make of a local time: "gap", "twice" (the first one taken),
    "range" (outside 2000 .. ten years ahead) or "ok"; and the moment in UTC."""
    first, second = naive.replace(tzinfo=BERLIN, fold=0), naive.replace(tzinfo=BERLIN, fold=1)
    try:
        moment = first.astimezone(timezone.utc)
    except OverflowError:
        return "range", None
    if first.utcoffset() != second.utcoffset():
        if moment.astimezone(BERLIN).replace(tzinfo=None) != naive:
            return "gap", None
        kind = "twice"
    else:
        kind = "ok"
    now = datetime.now(timezone.utc)
    if not datetime(2000, 1, 1, tzinfo=timezone.utc) <= moment <= latest_date(now):
        return "range", None
    return kind, moment


def test_local_times_across_daylight_saving_changes_are_read_as_a_person_would(make_school):
    school = make_school(students=24, SCHOOL_TIMEZONE="Europe/Berlin")
    client = school.app.test_client()
    headers = {"Authorization": f"Bearer {school.token}"}
    seen = set()

    @DEPTHS
    @given(start=local_times, length=st.integers(0, 180))
    def throw(start: datetime, length: int):
        end = start + timedelta(minutes=length)
        body = {"title": "Open day", "audience": {"roles": ["teachers"]},
                "starts_at": start.isoformat(timespec="minutes"), "ends_at": end.isoformat(timespec="minutes")}
        before = rows(school)
        response = client.post("/api/events", json=body, headers=headers)
        assert response.status_code < 500, (body, response.get_data(as_text=True))
        readings = {name: expected_reading(moment) for name, moment in (("starts_at", start), ("ends_at", end))}
        refused = {name for name, (kind, _) in readings.items() if kind in ("gap", "range")}
        if not refused and readings["ends_at"][1] < readings["starts_at"][1]:
            refused = {"ends_at"}  # the second 02:30 is before the first 02:59 of the same night
        if refused:
            assert response.status_code == 422, (body, response.json)
            assert set(response.json["fields"]) == refused, (body, response.json)
            for name in refused:
                kind = readings[name][0]
                message = response.json["fields"][name]
                assert {"gap": "does not exist in Europe/Berlin", "range": "Use a date from 2000-01-01",
                        "ok": "cannot end before", "twice": "cannot end before"}[kind] in message, message
                seen.add(kind)
            assert rows(school) == before
        else:
            assert response.status_code == 202, (body, response.json)
            twice = {name for name, (kind, _) in readings.items() if kind == "twice"}
            assert set(response.json.get("notes", {})) == twice, (body, response.json)
            for name in twice:
                assert "happens twice in Europe/Berlin" in response.json["notes"][name]
                assert "the first one was taken" in response.json["notes"][name]
                seen.add("twice")
            seen.add("ok")

    throw()
    assert {"gap", "range", "twice", "ok"} <= seen, seen  # every kind was really tried
