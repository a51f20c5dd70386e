"""Every family in its own language: the emails a class's English, Spanish and Arabic guardians
receive through a real consumer and SMTP server, staff's translation of an event, the family page
in Chromium, and catalogs that translate every message a family can see."""
import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from icalendar import Calendar

from school import config
from school.i18n import LANGUAGES, SOURCES, resolve, supported
from tests.support.pages import csrf_token, parse
from tests.support.school import EVENT

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"http://school\.test(/n/[A-Za-z0-9_\-.]+)")
# The class with the most guardians who have an address.
BIGGEST_CLASS = """
    SELECT c.name FROM classes c JOIN students s ON s.class_id = c.id
    JOIN student_guardians sg ON sg.student_id = s.id JOIN guardians g ON g.id = sg.guardian_id
    WHERE g.email IS NOT NULL GROUP BY c.name ORDER BY count(DISTINCT g.id) DESC, c.name LIMIT 1
"""
GUARDIANS_OF = """
    SELECT DISTINCT g.id, lower(g.email) FROM guardians g JOIN student_guardians sg ON sg.guardian_id = g.id
    JOIN students s ON s.id = sg.student_id JOIN classes c ON c.id = s.class_id
    WHERE c.name = :name AND g.email IS NOT NULL ORDER BY g.id
"""
SPANISH = {"title": "Día del deporte", "description": "Traigan ropa deportiva y agua.", "location": "Patio"}


def a_class_in_three_languages(school) -> tuple[str, dict[str, str]]:
    """The biggest class, its guardians speaking English, Spanish (as the roster writes it,
    es-MX) and Arabic in turn; returns the class and each address's expected locale."""
    name = school.scalar(BIGGEST_CLASS)
    expected = {}
    for index, (guardian_id, email) in enumerate(school.sql(GUARDIANS_OF, name=name)):
        stored, locale = [("en", "en"), ("es-MX", "es"), ("ar", "ar")][index % 3]
        school.execute("UPDATE guardians SET language = :language WHERE id = :id", language=stored, id=guardian_id)
        expected[email] = locale
    assert set(expected.values()) == {"en", "es", "ar"}
    return name, expected


def mail_of(smtp, subject: str) -> dict:
    """Address -> message, for the messages with this subject."""
    return {m.rcpt: m.message for m in smtp.received if m.message["Subject"] == subject}


def parts(message) -> tuple[str, str, str]:
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    (calendar,) = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    return text, html, calendar.get_content()


@pytest.mark.slow
def test_each_guardian_reads_the_notice_in_their_language(make_school, smtp_server, consumer):
    school = make_school(students=60, smtp=smtp_server, SCHOOL_TIMEZONE="Europe/Madrid", NOTIFY_BATCH_SIZE=2)
    name, expected = a_class_in_three_languages(school)
    audience = {"roles": ["guardians"], "grades": [], "classes": [name]}
    # One guardian prefers French on the preferences page: that choice beats the roster's.
    french = next(email for email, locale in expected.items() if locale == "en")
    school.execute("INSERT INTO address_preferences (email, language, updated_at) VALUES (:e, 'fr', '2026-01-01')",
                   e=french)
    expected[french] = "fr"
    consumer(school, workers=2)

    plain = school.create_event(audience, title="Sports day", description="Bring sports clothes and water.",
                                location="Playground", starts_at="2031-03-12T18:00:00Z",
                                ends_at="2031-03-12T20:00:00Z")
    assert school.wait_job_done(plain["job_id"], 60)["sent"] == len(expected)
    got = mail_of(smtp_server, "Sports day")
    assert set(got) == set(expected)
    # Every batch holds one language, so it renders its bodies once.
    assert all(n == 1 for _batch, n in school.sql(
        "SELECT batch_id, count(DISTINCT language) FROM notifications WHERE job_id = :job GROUP BY batch_id",
        job=plain["job_id"]))

    for address, message in got.items():
        locale = expected[address]
        text, html, calendar = parts(message)
        assert message["Content-Language"] == {"en": "en", "es": "es", "ar": "ar", "fr": "fr"}[locale]
        assert message["Subject"] == "Sports day"
        # 19:00 in Madrid on Wednesday 12 March 2031, as each language writes it.
        want = {"en": ("Dear ", "Wednesday, March 12, 2031", "7:00\u2009–\u20099:00\u202fPM"),
                "es": ("Estimado/a ", "miércoles, 12 de marzo de 2031", "19:00–21:00"),
                "fr": ("Bonjour ", "mercredi 12 mars 2031", "19:00\u2009–\u200921:00"),
                "ar": ("عزيزي/عزيزتي ", "الأربعاء، 12 مارس 2031", "7:00–9:00 م")}[locale]
        for part in (text, html):
            assert all(piece in part for piece in want), (locale, part)
        written_in = {"en": None, "es": "Este aviso está redactado en inglés.",
                      "fr": "Cet avis a été rédigé en anglais.", "ar": "كُتب هذا الإشعار باللغة الإنجليزية."}[locale]
        if written_in:
            assert written_in in text and written_in in html
            entry = Calendar.from_ical(calendar).walk("VEVENT")[0]
            assert str(entry["DESCRIPTION"]) == f"{written_in}\n\nBring sports clothes and water."
        else:
            assert "written in" not in text
        assert ('dir="rtl"' in html) == (locale == "ar")
        assert f'<html lang="{locale}"' in html

    # Staff's Spanish translation: Spanish guardians read it, the others the original with the line.
    translated = school.create_event(audience, priority="urgent", title="Sports day moved",
                                     description="Bring sports clothes and water.", location="Playground",
                                     translations={"es": {**SPANISH, "title": "Día del deporte, nueva fecha"}})
    assert school.wait_job_done(translated["job_id"], 60)["sent"] == len(expected)
    got = {m.rcpt: m.message for m in smtp_server.received
           if m.message["Subject"].endswith(("Sports day moved", "Día del deporte, nueva fecha"))}
    assert set(got) == set(expected)
    for address, message in got.items():
        locale = expected[address]
        text, html, calendar = parts(message)
        entry = Calendar.from_ical(calendar).walk("VEVENT")[0]
        if locale == "es":
            assert message["Subject"] == "Urgente: Día del deporte, nueva fecha"
            assert "Traigan ropa deportiva y agua." in text and "Patio" in html
            assert "Bring sports clothes" not in text and "redactado en" not in text
            assert str(entry["SUMMARY"]) == "Día del deporte, nueva fecha"
            assert str(entry["DESCRIPTION"]) == SPANISH["description"]
        else:
            assert message["Subject"] == {"en": "Urgent: Sports day moved", "fr": "Urgent\u00a0: Sports day moved",
                                          "ar": "عاجل: Sports day moved"}[locale]
            assert "Bring sports clothes and water." in text and "Traigan" not in text
            assert str(entry["SUMMARY"]) == "Sports day moved"

    # A reminder says so in each reader's language, around the translated title or the original.
    earlier = len(smtp_server.received)
    response = school.api("POST", f"/api/events/{translated['event_id']}/remind", json={"who": "all"})
    assert response.status_code == 202, response.get_data(as_text=True)
    assert school.wait_job_done(response.get_json()["job_id"], 60)["sent"] == len(expected)
    subjects = {m.rcpt: m.message["Subject"] for m in smtp_server.received[earlier:]}
    assert subjects == {address: {"es": "Urgente: Recordatorio: Día del deporte, nueva fecha",
                                  "en": "Urgent: Reminder: Sports day moved",
                                  "fr": "Urgent\u00a0: Rappel : Sports day moved",  # the title's own spaces are plain ones
                                  "ar": "عاجل: تذكير: Sports day moved"}[locale] for address, locale in expected.items()}


@pytest.mark.slow
def test_the_family_page_speaks_the_familys_language(make_school, live_server, chromium):
    """Rows written by the fan-out in this process (no mail needed), pages read in Chromium."""
    from school.family.tokens import notice_token
    from school.notify.fanout import run_fanout

    school = make_school(students=60, SCHOOL_TIMEZONE="Europe/Madrid")
    name, expected = a_class_in_three_languages(school)
    created = school.create_event({"roles": ["guardians"], "grades": [], "classes": [name]}, rsvp=True,
                                  title="Sports day", translations={"es": SPANISH},
                                  starts_at="2031-03-12T18:00:00Z", ends_at="2031-03-12T20:00:00Z")
    with school.app.app_context():
        run_fanout(created["job_id"], lambda batch_id, priority: None)
    rows = school.sql("SELECT id, email, language FROM notifications WHERE job_id = :job", job=created["job_id"])
    assert {email: language for _id, email, language in rows} == expected
    with school.app.app_context():
        path = {language: f"/n/{notice_token(created['job_id'], row_id)}" for row_id, _email, language in rows}
    server = live_server(school.app)
    page = chromium.new_page()

    page.goto(server.url + path["es"])
    assert page.locator("html").get_attribute("lang") == "es"
    assert page.locator("h1").inner_text() == "Día del deporte"
    assert "miércoles, 12 de marzo de 2031" in page.locator(".facts").inner_text()
    page.get_by_role("button", name="Lo he leído").click()
    page.wait_for_load_state()
    assert "Gracias: la escuela sabe que usted ha leído este aviso." in page.locator("body").inner_text()
    page.get_by_label("Sí").check()
    page.get_by_role("button", name="Enviar mi respuesta").click()
    page.wait_for_load_state()
    assert "Su respuesta: sí." in page.locator("body").inner_text()

    page.goto(server.url + path["ar"])
    assert page.locator("html").get_attribute("dir") == "rtl"
    assert page.locator("html").get_attribute("lang") == "ar"
    assert page.locator("h1").inner_text() == "Sports day"
    assert "كُتب هذا الإشعار باللغة الإنجليزية." in page.locator("body").inner_text()
    # The family switches to Ukrainian on the preferences page: from then on the page speaks it.
    page.get_by_role("link", name="تفضيلات البريد الإلكتروني").click()
    page.wait_for_load_state()
    page.get_by_label("اللغة").select_option("uk")
    page.get_by_role("button", name="حفظ").click()
    page.wait_for_load_state()
    assert page.locator("html").get_attribute("lang") == "uk"
    assert page.locator("html").get_attribute("dir") == "ltr"
    assert "Ваші налаштування збережено." in page.locator("body").inner_text()
    page.get_by_role("link", name="Назад до повідомлення").click()
    page.wait_for_load_state()
    assert "Мова оригіналу цього повідомлення: англійська." in page.locator("body").inner_text()


def test_the_api_takes_translations_and_names_an_unknown_language(make_school):
    school = make_school()
    refused = school.api("POST", "/api/events", json={**EVENT, "translations": {"xx": {"title": "?"},
                                                                                 "fr": {"description": "Sans titre"}}})
    assert refused.status_code == 422
    fields = refused.get_json()["fields"]
    assert fields["translations.xx"].startswith("Unknown language")
    assert fields["translations.fr.title"] == "This field is required."
    assert school.scalar("SELECT count(*) FROM events") == 0

    created = school.api("POST", "/api/events", json={**EVENT, "translations": {"pt-BR": {"title": "Dia do desporto"},
                                                                                 "zh-Hans-CN": {"title": "运动会"}}})
    assert created.status_code == 202, created.get_data(as_text=True)
    event = school.api("GET", f"/api/events/{created.get_json()['event_id']}").get_json()
    assert event["translations"] == {"pt": {"title": "Dia do desporto"}, "zh_Hans": {"title": "运动会"}}


def test_the_create_form_adds_translations_with_or_without_javascript(make_school):
    school = make_school(students=12)
    staff = school.admin()
    form = {"title": "Sports day", "starts_at": "2031-06-12T09:00", "ends_at": "2031-06-12T15:00",
            "priority": "normal", "roles": ["guardians"]}
    # With htmx: the button fetches one block and swaps in the button for the next.
    block = parse(staff.client.get("/events/translation?index=0", headers={"HX-Request": "true"}).data)
    assert block.find("select", name="translations-0-language") is not None
    assert block.by_id("add-translation").attrs["hx-swap-oob"] == "true"
    assert "index=1" in block.by_id("add-translation").attrs["hx-get"]
    # Without JavaScript: the button submits the form, which comes back with a block and nothing written.
    again = staff.post("/events/new", {**form, "add_translation": "1"})
    assert again.status_code == 200 and parse(again.data).find("input", name="translations-0-title") is not None
    assert school.scalar("SELECT count(*) FROM events") == 0
    # A block without its title is named beside it; a complete one is stored.
    missing = staff.post("/events/new", {**form, "translations-0-language": "es", "translations-0-title": ""})
    assert missing.status_code == 422 and "This field is required." in missing.get_data(as_text=True)
    done = staff.post("/events/new", {**form, "translations-0-language": "es", "translations-0-title": "Día del deporte",
                                      "translations-0-location": "Patio"})
    assert done.status_code == 302, done.get_data(as_text=True)
    event = school.api("GET", f"/api/events/{school.scalar('SELECT id FROM events')}").get_json()
    assert event["translations"] == {"es": {"title": "Día del deporte", "location": "Patio"}}


@pytest.mark.parametrize("stored, locale", [
    ("es", "es"), ("pt-BR", "pt"), ("PT_pt", "pt"), ("zh-Hans-CN", "zh_Hans"), ("zh-CN", "zh_Hans"),
    ("zh", "zh_Hans"), ("zh_Hans", "zh_Hans"), ("uk-UA", "uk"), ("ar-EG", "ar"), ("vi", "vi"),
    ("zh-Hant-TW", None), ("tr", None), ("", None), (None, None), ("-", None),
])
def test_a_stored_code_maps_to_a_language_by_its_base(stored, locale):
    assert supported(stored) == locale
    assert resolve(stored, "de") == (locale or "de")


def test_every_catalog_translates_every_message_a_family_can_see():
    """What `pybabel extract -F babel.cfg` finds in the sources, each catalog translates: no empty
    or fuzzy entry, the same placeholders, and a catalog for each language offered."""
    with open(ROOT / "babel.cfg") as config:
        method_map, options_map = parse_mapping_cfg(config)
    wanted = {message for _file, _line, message, _comments, _context in
              extract_from_dir(str(ROOT), method_map, options_map)}
    wanted = {m if isinstance(m, str) else m[0] for m in wanted}
    assert "Dear %(name)s," in wanted and "This notice was written in %(language)s." in wanted
    catalogs = sorted(p.parent.parent.name for p in SOURCES.glob("*/LC_MESSAGES/messages.po"))
    assert catalogs == sorted(LANGUAGES)
    for language in catalogs:
        with open(SOURCES / language / "LC_MESSAGES" / "messages.po", "rb") as source:
            catalog = read_po(source, locale=language)
        problems = [f"{m.id!r}: untranslated" for m in catalog if m.id and not m.string]
        problems += [f"{m.id!r}: fuzzy" for m in catalog if m.id and m.fuzzy]
        problems += [f"{wanted_id!r}: missing" for wanted_id in sorted(wanted) if wanted_id not in catalog]
        problems += [f"{m.id!r}: {', '.join(map(str, errors))}" for m, errors in catalog.check()]
        assert not problems, f"{language}: " + "; ".join(problems)


def test_the_schools_language_is_a_setting_checked_at_start():
    assert config.load({"SCHOOL_LANGUAGE": "pt-BR"})["SCHOOL_LANGUAGE"] == "pt"
    assert config.load({})["SCHOOL_LANGUAGE"] == "en"
    with pytest.raises(config.ConfigError, match="SCHOOL_LANGUAGE"):
        config.load({"SCHOOL_LANGUAGE": "klingon"})
