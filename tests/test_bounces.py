"""Bounces and complaints, as the mail system and the providers deliver them: a notice goes out with
a tagged envelope sender per recipient, what comes back to that address is read by
``flask receive-bounce`` (the MTA's pipe), the listener or a webhook, and the next notice leaves
dead addresses out."""
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
def test_a_bounce_a_complaint_and_an_ses_report_each_stop_mail_to_that_address(make_school, smtp_server, consumer):
    school = make_school(students=48, smtp=smtp_server, BOUNCE_WEBHOOK_SECRET=SECRET)
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

    # The next notice to the class skips both dead addresses and the complainer, and says so.
    second = send(school, "Class photo")
    assert set(notices(smtp_server, "Class photo")) == set(others)
    assert second["job"]["suppressed"] == 2 and second["job"]["opted_out"] == 1
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
