"""Bounces and complaints, as the mail system and the providers deliver them: a notice goes out with
a tagged envelope sender per recipient, what comes back to that address is read by
``flask receive-bounce`` (the MTA's pipe), the listener or a webhook, and the next notice leaves
dead addresses out."""
import base64
import json
import subprocess

import pytest

from tests.support.host import BIN, ROOT, free_port
from tests.support.pages import parse

SCHOOL_DOMAIN = "springfield-school.example.org"
CLASS = {"roles": ["guardians"], "grades": [], "classes": ["1A"]}
SECRET = "hook-secret-1234"


# --- what comes back, written as the mail systems write it ----------------------------------------

def dsn(to: str, recipient: str, status: str = "5.1.1", action: str = "failed",
        diagnostic: str = "smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown") -> bytes:
    """A delivery status notification (RFC 3464) as Postfix sends it to the envelope sender ``to``."""
    return (
        f"Return-Path: <>\r\nFrom: MAILER-DAEMON@mx.families.example.org (Mail Delivery System)\r\n"
        f"To: {to}\r\nSubject: Undelivered Mail Returned to Sender\r\nAuto-Submitted: auto-replied\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n"
        f' boundary="BOUNDARY"\r\n\r\n'
        f"--BOUNDARY\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message could not\r\n"
        f"be delivered to one or more recipients.\r\n\r\n"
        f"--BOUNDARY\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.families.example.org\r\nArrival-Date: Thu, 3 Dec 2026 20:00:00 +0000\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nOriginal-Recipient: rfc822;{recipient}\r\n"
        f"Action: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: {diagnostic.format(rcpt=recipient)}\r\n\r\n"
        f"--BOUNDARY\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: School <notices@{SCHOOL_DOMAIN}>\r\n"
        f"To: {recipient}\r\nSubject: Class trip\r\n\r\n--BOUNDARY--\r\n"
    ).encode()


def complaint(original: bytes, to: str = f"fbl@{SCHOOL_DOMAIN}") -> bytes:
    """An ARF report (RFC 5965) from a provider's feedback loop, carrying the message as it was
    delivered (with the Return-Path the receiving server added)."""
    return (
        f"From: feedback-loop@provider.example.net\r\nTo: {to}\r\nSubject: Abuse report\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report;\r\n"
        f' boundary="ARF"\r\n\r\n'
        f"--ARF\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n\r\n"
        f"--ARF\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
        f"User-Agent: SomeGenerator/1.0\r\nVersion: 1\r\n\r\n"
        f"--ARF\r\nContent-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"
    ).encode() + original + b"\r\n--ARF--\r\n"


def ses_bounce(source: str, recipient: str, message_id: str = "") -> dict:
    """An SNS notification carrying an SES Bounce, as SNS posts it."""
    message = {
        "notificationType": "Bounce",
        "bounce": {"bounceType": "Permanent", "bounceSubType": "General", "timestamp": "2026-12-03T20:00:00.000Z",
                   "feedbackId": "0100-abc", "reportingMTA": "dsn; a1-2.smtp-out.amazonses.com",
                   "bouncedRecipients": [{"emailAddress": recipient, "action": "failed", "status": "5.1.1",
                                          "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
        "mail": {"timestamp": "2026-12-03T19:59:58.000Z", "source": source, "messageId": "0100-def",
                 "destination": [recipient], "commonHeaders": {"messageId": message_id}},
    }
    return {"Type": "Notification", "MessageId": "2f1c", "TopicArn": "arn:aws:sns:eu-west-1:1:bounces",
            "Message": json.dumps(message), "Timestamp": "2026-12-03T20:00:01.000Z", "SignatureVersion": "1"}


# --- helpers ------------------------------------------------------------------------------------

def receive_bounce(env: dict, raw: bytes, *args: str) -> subprocess.CompletedProcess:
    """``flask --app app receive-bounce``, the way Postfix's pipe runs it."""
    return subprocess.run([str(BIN / "flask"), "--app", "app", "receive-bounce", *args], input=raw, cwd=ROOT,
                          env=env, capture_output=True, timeout=60)


def notices(smtp, subject: str) -> dict:
    return {m.rcpt: m for m in smtp.received if m.subject == subject}


def send(school, title: str, audience=CLASS, **fields) -> dict:
    created = school.create_event(audience, title=title, **fields)
    job = school.wait_job_done(created["job_id"], 60)
    assert job["status"] == "done", job
    return {**created, "job": job}


def ledger(school, job_id: int, status: str) -> dict:
    found = school.api("GET", f"/api/jobs/{job_id}/recipients?status={status}&per_page=100").get_json()
    return {r["email"]: r for r in found["recipients"]}


# --- the whole path, with real processes ----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_bounce_a_complaint_and_an_ses_report_each_stop_mail_to_that_address(make_school, smtp_server, consumer,
                                                                                database):
    school = make_school(students=48, database=database, smtp=smtp_server, BOUNCE_WEBHOOK_SECRET=SECRET)
    consumer(school, workers=2)
    first = send(school, "Class trip")
    got = notices(smtp_server, "Class trip")
    assert len(got) == first["job"]["sent"] >= 4
    # Each message's envelope sender is the bounce address tagged for its recipient.
    senders = {m.mail_from for m in got.values()}
    assert len(senders) == len(got)
    assert all(s.startswith("bounces+") and s.endswith("@" + SCHOOL_DOMAIN) for s in senders)
    dead, complainer, ses_dead, *others = sorted(got)

    # The family's provider bounces the message hours later; Postfix pipes it to receive-bounce.
    result = receive_bounce(school.consumer_env(), dsn(got[dead].mail_from, dead), "--recipient",
                            got[dead].mail_from)
    assert result.returncode == 0, result.stderr.decode()
    bounced = ledger(school, first["job_id"], "bounced")
    assert list(bounced) == [dead]
    assert "5.1.1" in bounced[dead]["server_reply"] and "User unknown" in bounced[dead]["server_reply"]
    assert school.job(first["job_id"])["bounced"] == 1
    listed = school.api("GET", "/api/suppressions").get_json()["suppressions"]
    assert [(s["email"], s["kind"]) for s in listed] == [(dead, "hard")] and "5.1.1" in listed[0]["reason"]

    # A parent presses "spam": the provider's feedback loop sends an ARF report to another address.
    result = receive_bounce(school.consumer_env(), complaint(b"Return-Path: <%s>\r\n" % got[complainer].mail_from.encode()
                                                             + got[complainer].raw))
    assert result.returncode == 0, result.stderr.decode()

    # Amazon SES reports the third one by webhook (SNS posts JSON as text/plain).
    body = json.dumps(ses_bounce(got[ses_dead].mail_from, ses_dead))
    response = school.client.post(f"/webhooks/bounces/ses/{SECRET}", data=body, content_type="text/plain")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["handled"] == 1
    assert set(ledger(school, first["job_id"], "bounced")) == {dead, ses_dead}

    # The event's page names the class's students none of whose guardians it reached.
    delivered = set(got) - {dead, ses_dead}
    guardians = {}
    for student, email in school.sql(
            "SELECT s.id, lower(g.email) FROM students s JOIN classes c ON c.id = s.class_id "
            "JOIN student_guardians sg ON sg.student_id = s.id JOIN guardians g ON g.id = sg.guardian_id "
            "WHERE c.name = '1A'"):
        guardians.setdefault(student, set()).add(email)
    unreached = {student for student, emails in guardians.items() if not emails & delivered}
    page = parse(school.admin().client.get(f"/events/{first['event_id']}").data)
    assert page.find("p", **{"data-unreached": str(len(unreached))}) is not None
    assert {int(li.attrs["data-student"]) for li in page.find("section", id="unreached").find_all("li")} == unreached

    # The next notice to the class skips both dead addresses and the complainer, and says so.
    second = send(school, "Class photo")
    assert set(notices(smtp_server, "Class photo")) == set(others)
    assert second["job"]["suppressed"] == 2 and second["job"]["opted_out"] == 1
    assert set(ledger(school, second["job_id"], "suppressed")) == {dead, ses_dead}
    assert set(ledger(school, second["job_id"], "opted_out")) == {complainer}
    staff = school.admin()
    page = parse(staff.client.get(f"/jobs/{second['job_id']}/progress").data)
    assert page.find("dd", **{"data-stat": "suppressed"}).text == "2"

    # An urgent notice reaches the complainer (opted out of normal notices only), never a dead address.
    send(school, "School closed today", priority="urgent")
    assert set(notices(smtp_server, "Urgent: School closed today")) == {complainer, *others}

    # An admin lifts one suppression: the address is mailed again.
    assert school.api("DELETE", f"/api/suppressions/{ses_dead}").status_code == 200
    assert school.api("DELETE", f"/api/suppressions/{ses_dead}").status_code == 404
    send(school, "Sports day")
    assert set(notices(smtp_server, "Sports day")) == {ses_dead, *others}


# --- bad input: ignored and logged, never a crash or a wrong suppression ---------------------------

@pytest.fixture
def sent_school(make_school):
    """A class notice written by the fan-out in this process and marked sent (no mail needed):
    ``(school, {address: its tagged bounce address}, job_id)``."""
    from school.bounces.verp import bounce_address
    from school.notify.fanout import run_fanout
    from school.notify.models import Notification

    school = make_school(students=48, BOUNCE_MAX_BYTES=4096, BOUNCE_WEBHOOK_SECRET=SECRET)
    created = school.create_event(CLASS, title="Class trip")
    with school.app.app_context():
        run_fanout(created["job_id"], lambda batch_id, priority: None)
        rows = Notification.query.filter_by(job_id=created["job_id"]).all()
        tagged = {row.email: bounce_address(row.id) for row in rows}
    school.execute("UPDATE notifications SET status = 'sent' WHERE job_id = :job", job=created["job_id"])
    return school, tagged, created["job_id"]


def pipe(school, raw: bytes, *args: str):
    """receive-bounce in this process (the subprocess path is tested above)."""
    return school.app.test_cli_runner().invoke(args=["receive-bounce", *args], input=raw)


def suppressed(school) -> set[str]:
    return {row[0] for row in school.sql("SELECT email FROM suppressions WHERE lifted_at IS NULL")}


def test_what_is_not_a_bounce_about_our_recipient_changes_nothing(sent_school):
    from tests.test_metrics import scrape

    school, tagged, job_id = sent_school
    first, second, *_ = sorted(tagged)
    forged_tag = tagged[first].replace("@", "x@")  # the right shape, a signature we never made
    out_of_office = (f"From: {first}\r\nTo: {tagged[first]}\r\nSubject: Out of office\r\n"
                     "Auto-Submitted: auto-replied\r\n\r\nI am away until Monday.\r\n").encode()
    cases = {
        "garbage": (b"\x00\xff" * 500 + b"\r\n\r\n:::", ()),
        "empty": (b"", ()),
        "no tag at all (forged)": (dsn(f"notices@{SCHOOL_DOMAIN}", first), ()),
        "a tag we did not sign": (dsn(forged_tag, first), ()),
        "a tag for another school's address": (dsn(tagged[first].replace(SCHOOL_DOMAIN, "elsewhere.example"),
                                                   first), ()),
        "an unknown recipient": (dsn("bounces+zzzzzz-aaaaaaaaaa@" + SCHOOL_DOMAIN, first), ()),
        "too large": (dsn(tagged[first], first) + b"x" * 5000, ()),
        "an out-of-office reply": (out_of_office, ()),
        "a delay warning": (dsn(tagged[first], first, "4.4.1", "delayed"), ()),
        "a human's answer": (f"From: {first}\r\nTo: {tagged[first]}\r\nSubject: Re: Class trip\r\n\r\n"
                             "Thanks!\r\n".encode(), ()),
        "a feedback report that is not a complaint": (complaint(b"Return-Path: <%s>\r\nTo: %s\r\n\r\nhi\r\n" % (
            tagged[first].encode(), first.encode())).replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam"),
            ()),
    }
    for name, (raw, args) in cases.items():
        result = pipe(school, raw, *args)
        assert result.exit_code == 0, (name, result.output, result.exception)
    assert suppressed(school) == set()
    assert school.scalar("SELECT count(*) FROM notifications WHERE status = 'bounced'") == 0
    assert school.scalar("SELECT count(*) FROM address_preferences WHERE opted_out_at IS NOT NULL") == 0
    metrics = scrape(school.client, school.token)
    assert metrics[("school_bounce_reports_total", (("outcome", "ignored"),))] == len(cases)
    assert metrics[("school_bounce_reports_total", (("outcome", "hard"),))] == 0

    # The same DSN with our tag is acted on, for that recipient only; so is Exim's own format.
    assert pipe(school, dsn(tagged[second], second)).exit_code == 0
    assert suppressed(school) == {second}
    third = sorted(tagged)[2]
    exim = (f"From: Mail Delivery System <Mailer-Daemon@mx.families.example.org>\r\nTo: {tagged[third]}\r\n"
            "Subject: Mail delivery failed: returning message to sender\r\n"
            f"X-Failed-Recipients: {third}\r\nAuto-Submitted: auto-replied\r\n\r\n"
            "This message was created automatically by mail delivery software.\r\n\r\n"
            "A message that you sent could not be delivered to one or more of its\r\n"
            "recipients. This is a permanent error. The following address(es) failed:\r\n\r\n"
            f"  {third}\r\n    SMTP error from remote mail server after RCPT TO:<{third}>:\r\n"
            "    550 5.1.1 User unknown\r\n").encode()
    assert pipe(school, exim).exit_code == 0
    assert suppressed(school) == {second, third}
    assert "5.1.1" in ledger(school, job_id, "bounced")[third]["server_reply"]


def test_three_soft_bounces_in_a_month_suppress_and_one_does_not(sent_school):
    school, tagged, job_id = sent_school
    address = sorted(tagged)[0]
    full = dsn(tagged[address], address, "4.2.2", diagnostic="smtp; 452 4.2.2 Mailbox full")
    for _ in range(2):
        assert pipe(school, full).exit_code == 0
    assert suppressed(school) == set()
    row = school.api("GET", f"/api/jobs/{job_id}/recipients?q={address}").get_json()["recipients"][0]
    assert row["status"] == "sent" and "Mailbox full" in row["server_reply"]
    assert pipe(school, full).exit_code == 0
    assert suppressed(school) == {address}
    (listed,) = school.api("GET", "/api/suppressions").get_json()["suppressions"]
    assert listed["kind"] == "soft" and "3 soft bounces" in listed["reason"]


def test_webhooks_need_the_secret_and_read_postmark_and_ses(sent_school, make_school):
    school, tagged, job_id = sent_school
    first, second, *_ = sorted(tagged)
    body = json.dumps(ses_bounce("someone@elsewhere.example", first))
    client = school.app.test_client()
    assert client.post("/webhooks/bounces/ses", data=body).status_code == 401
    assert client.post("/webhooks/bounces/ses/wrong-secret", data=body).status_code == 403
    assert client.post("/webhooks/bounces/ses", data=body, headers={"X-Webhook-Secret": "nope"}).status_code == 403
    off = make_school()
    assert off.client.post(f"/webhooks/bounces/ses/{SECRET}", data=body).status_code == 403
    assert suppressed(school) == set()

    # Bad bodies are a 400 that says why, never a 500.
    for bad in ("not json", "[1, 2]", json.dumps({"Type": "Notification", "Message": "{"}), json.dumps({"x": 1})):
        response = client.post(f"/webhooks/bounces/ses/{SECRET}", data=bad)
        assert response.status_code == 400 and response.get_json()["error"]

    # SNS asks to confirm the subscription: logged for the operator, nothing fetched.
    confirm = {"Type": "SubscriptionConfirmation", "TopicArn": "arn:aws:sns:eu-west-1:1:bounces",
               "SubscribeURL": "https://sns.example.invalid/confirm", "Token": "t"}
    response = client.post(f"/webhooks/bounces/ses/{SECRET}", data=json.dumps(confirm))
    assert response.status_code == 200 and response.get_json()["handled"] == 0

    # SES: the address we sent to, found by its own address when the source is not ours.
    response = client.post("/webhooks/bounces/ses", data=body, headers={"X-Webhook-Secret": SECRET})
    assert response.get_json()["handled"] == 1
    assert suppressed(school) == {first}

    # Postmark, with the secret as the URL's password: a hard bounce and a spam complaint.
    postmark = {"RecordType": "Bounce", "ID": 42, "Type": "HardBounce", "TypeCode": 1, "Name": "Hard bounce",
                "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Email": second.upper(),
                "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist",
                "BouncedAt": "2026-12-03T20:00:00Z", "Inactive": True, "CanActivate": True}
    auth = {"Authorization": "Basic " + base64.b64encode(f"postmark:{SECRET}".encode()).decode()}
    response = client.post("/webhooks/bounces/postmark", json=postmark, headers=auth)
    assert response.status_code == 200 and response.get_json()["handled"] == 1
    assert suppressed(school) == {first, second}
    assert set(ledger(school, job_id, "bounced")) == {first, second}
    stranger = {**postmark, "Email": "nobody@never-sent.example"}
    assert client.post("/webhooks/bounces/postmark", json=stranger, headers=auth).get_json()["ignored"] == 1
    spam = {"RecordType": "SpamComplaint", "Type": "SpamComplaint", "TypeCode": 512, "Email": sorted(tagged)[2]}
    assert client.post("/webhooks/bounces/postmark", json=spam, headers=auth).get_json()["handled"] == 1
    assert school.sql("SELECT email FROM address_preferences WHERE opted_out_at IS NOT NULL") == [(sorted(tagged)[2],)]
    assert suppressed(school) == {first, second}


@pytest.mark.slow
def test_receive_bounce_asks_the_mta_to_try_again_while_the_database_is_down(sent_school):
    school, tagged, _job_id = sent_school
    address = sorted(tagged)[0]
    down = school.consumer_env(DATABASE_URL=f"postgresql://school@127.0.0.1:{free_port()}/school",
                               DATABASE_CONNECT_TIMEOUT="2")
    result = receive_bounce(down, dsn(tagged[address], address))
    assert result.returncode == 75, result.stderr.decode()
    # Once it is back, the MTA's next try is recorded.
    assert receive_bounce(school.consumer_env(), dsn(tagged[address], address)).returncode == 0
    assert suppressed(school) == {address}


# --- the office's worklist ----------------------------------------------------------------------------

def test_contacts_to_fix_lists_bouncing_addresses_until_the_office_or_an_import_corrects_them(
        app, auth, admin_user, client, tmp_path):
    from school.bounces.suppressions import suppress
    from school.extensions import db
    from school.roster.importer import import_roster
    from school.roster.models import Guardian
    from tests.support.pages import csrf_token
    from tests.support.roster import MARIA, MARIA_NEW, first_bundle, second_bundle, write_bundle

    with app.app_context():
        assert not import_roster(write_bundle(tmp_path / "a", first_bundle())).refused
        maria = db.session.scalar(db.select(Guardian.id).where(Guardian.email == MARIA))
        suppress(MARIA, "hard", "bounced: 5.1.1 smtp; 550 5.1.1 User unknown")
        db.session.commit()
    auth.login_as(admin_user)
    html = client.get("/roster/contacts-to-fix").get_data(as_text=True)
    doc = parse(html)
    (row,) = doc.find("table", class_="bouncing").find("tbody").find_all("tr")
    assert row.attrs["data-email"] == MARIA and "5.1.1" in row.text and "Maria Silva" in row.text
    # Maria was Ana's only reachable guardian, and Ben's (his other one has no valid address).
    assert "2 students have no guardian" in html and doc.find("p", **{"data-bounced": str(maria)}) is not None

    # The office checks the address with the family and saves it unchanged: it is mailed again.
    response = client.post(f"/roster/guardians/{maria}/email", data={"email": MARIA, "csrf_token": csrf_token(html)})
    assert response.status_code == 302
    html = client.get("/roster/contacts-to-fix").get_data(as_text=True)
    assert "0 students have no guardian" in html and parse(html).find("table", class_="bouncing") is None

    # It bounces again; the school's system then sends a corrected address, which an old bounce had
    # suppressed too: the import lifts that, and nothing is left to fix.
    with app.app_context():
        suppress(MARIA, "hard", "bounced: 5.1.1 again")
        suppress(MARIA_NEW, "hard", "bounced: 5.1.1 long ago")
        db.session.commit()
        assert not import_roster(write_bundle(tmp_path / "b", second_bundle())).refused
    html = client.get("/roster/contacts-to-fix").get_data(as_text=True)
    assert "0 students have no guardian" in html and parse(html).find("table", class_="bouncing") is None
    with app.app_context():
        from school.bounces.suppressions import suppressed_among

        assert suppressed_among([MARIA, MARIA_NEW]) == {MARIA}


# --- the schema ------------------------------------------------------------------------------------

BEFORE_BOUNCES = "c4e8b1d5a3f7-1"


def test_the_bounce_revision_upgrades_sent_notices_and_goes_back_down(app_on, db_url):
    from flask_migrate import upgrade
    from sqlalchemy import text

    from school.extensions import db
    from school.notify.models import NotificationJob
    from tests.support.migrations import SENT_NOTICE, count_after_downgrade, upgrade_holding

    app = app_on(db_url)
    with app.app_context():
        upgrade_holding(BEFORE_BOUNCES, SENT_NOTICE)
        job = db.session.get(NotificationJob, 1)
        assert (job.suppressed, job.bounced) == (0, 0)
        assert db.session.execute(text("SELECT count(*) FROM suppressions")).scalar() == 0
        assert count_after_downgrade(BEFORE_BOUNCES, "notifications") == 1
        upgrade()


# --- the listener --------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
def test_the_bounce_server_takes_bounces_for_our_address_only(sent_school, lmtp):
    import smtplib

    from tests.support.host import wait_for

    school, tagged, job_id = sent_school
    first, second, *_ = sorted(tagged)
    port = free_port()
    server = subprocess.Popen([str(BIN / "flask"), "--app", "app", "bounce-server", "--port", str(port),
                               *(["--lmtp"] if lmtp else [])], cwd=ROOT, env=school.consumer_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client_class = smtplib.LMTP if lmtp else smtplib.SMTP

        def connected():
            try:
                return client_class("127.0.0.1", port, timeout=5)
            except OSError:
                return None

        relay = wait_for(connected, 30, 0.2, "the bounce server did not start")
        with relay:
            refused = relay.sendmail("", [f"someone@{SCHOOL_DOMAIN}", tagged[first]], dsn(tagged[first], first))
            assert list(refused) == [f"someone@{SCHOOL_DOMAIN}"]  # not a bounce address: 550, the other taken
            relay.sendmail("", [f"bounces@{SCHOOL_DOMAIN}"], dsn(f"bounces@{SCHOOL_DOMAIN}", second))  # no tag
        assert set(ledger(school, job_id, "bounced")) == {first}
        assert suppressed(school) == {first}
    finally:
        server.terminate()
        _out, err = server.communicate(timeout=15)
    assert server.returncode == 0, err.decode()
