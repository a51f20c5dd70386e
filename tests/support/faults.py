"""Counting what a fault did to a job, from what the SMTP server received and what the rows say.

``sent`` is how many distinct recipients received the job's email, ``duplicates`` how many
messages arrived beyond one per recipient, and ``lost`` how many recipients never received it
although nobody decided they should not (their row is neither ``failed`` nor ``canceled``). The
audience is worked out from the roster, not from the job's own rows, so a recipient the job
forgot to write down counts as lost too.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from .pages import csrf_token, parse
from .school import School
from .smtp import SmtpServer


def job_messages(smtp: SmtpServer, job_id: int) -> list:
    """What the SMTP server received for this job (its Message-IDs are ``<job<id>.n<row>@…>``)."""
    prefix = f"<job{job_id}."
    return [m for m in smtp.received if m.message_id.startswith(prefix)]


@dataclass(frozen=True)
class Tally:
    fault: str
    recipients: int
    sent: int
    duplicates: int
    lost: int
    failed: int
    canceled: int
    per_recipient: Counter
    message_ids: dict
    notes: dict

    def line(self) -> str:
        notes = "".join(f" {name}={value}" for name, value in self.notes.items())
        return (f"RELIABILITY fault={self.fault!r} recipients={self.recipients} sent={self.sent} "
                f"duplicates={self.duplicates} lost={self.lost} failed={self.failed} canceled={self.canceled}"
                + notes)

    @property
    def twice(self) -> list[str]:
        return sorted(a for a, n in self.per_recipient.items() if n > 1)


def tally(fault: str, school: School, smtp: SmtpServer, job_id: int, expected: set[str], **notes) -> Tally:
    """Count the job's outcome and print it as one line (``pytest -s`` shows it), with ``notes``
    (what else the test saw, e.g. how many messages had arrived when the fault struck)."""
    received = job_messages(smtp, job_id)
    per_recipient = Counter(m.rcpt for m in received)
    strangers = set(per_recipient) - expected
    assert not strangers, f"emails went to addresses outside the audience: {sorted(strangers)[:5]}"
    statuses = dict(school.sql("SELECT email, status FROM notifications WHERE job_id = :job", job=job_id))
    given_up = {email for email, status in statuses.items() if status in ("failed", "canceled")}
    message_ids: dict[str, set[str]] = {}
    for m in received:
        message_ids.setdefault(m.rcpt, set()).add(m.message_id)
    result = Tally(
        fault=fault,
        recipients=len(expected),
        sent=len(per_recipient),
        duplicates=len(received) - len(per_recipient),
        lost=len(expected - set(per_recipient) - given_up),
        failed=sum(1 for s in statuses.values() if s == "failed"),
        canceled=sum(1 for s in statuses.values() if s == "canceled"),
        per_recipient=per_recipient,
        message_ids=message_ids,
        notes=notes,
    )
    print(f"\n{result.line()}")
    return result


def settled(school: School, job_id: int) -> bool:
    """No batch of the job is being sent: whatever stopped it has taken effect everywhere."""
    return school.scalar("SELECT count(*) FROM notification_batches WHERE job_id = :job AND status = 'sending'",
                         job=job_id) == 0


def executions(consumers, task: str) -> int:
    """How many times the consumers started ``task`` (huey logs ``Executing <module>.<task>: <id>``)."""
    pattern = re.compile(rf"Executing school\.notify\.tasks\.{re.escape(task)}: ")
    return sum(len(pattern.findall(c.log())) for c in consumers)


class AdminPage:
    """An admin in a browser: logs in through the form and presses the htmx buttons of a job page,
    sending what htmx sends (``HX-Request`` and the CSRF header from the page)."""

    def __init__(self, school: School):
        self.client = school.admin().client

    def get(self, path: str):
        response = self.client.get(path)
        assert response.status_code == 200, f"GET {path} gave {response.status_code}"
        return response

    def press(self, job_id: int, label: str):
        """Find the button on the job's page and post to its ``hx-post`` like htmx does."""
        page = self.get(f"/jobs/{job_id}")
        buttons = {b.text: b for b in parse(page.data).find_all("button") if b.attrs.get("hx-post")}
        assert label in buttons, f"no {label!r} button on the job page; there are {sorted(buttons)}"
        return self.client.post(buttons[label].attrs["hx-post"],
                                headers={"HX-Request": "true", "X-CSRFToken": csrf_token(page.data)})

