"""A server that offers PIPELINING (as postfix does) gets MAIL, RCPT and DATA in one write; its
refusals are read and reported exactly as without pipelining, and the connection stays usable."""
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from aiosmtpd.controller import Controller

from school.notify import transport
from school.notify.letter import Letter
from tests.support.host import free_port
from tests.support.smtp import RecordingHandler

NO_SUCH_USER = "550 5.1.1 No such user"
TRY_LATER = "451 4.3.0 Try again later"


class PipeliningHandler(RecordingHandler):
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


@pytest.fixture
def pipelining_server():
    handler = PipeliningHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), ready_timeout=10)
    controller.start()
    yield controller
    controller.stop()


def test_refusals_over_a_pipelining_server(app_on, sqlite_url, pipelining_server):
    app = app_on(sqlite_url, MAIL_PORT=str(pipelining_server.port))
    app.extensions["mail"].suppress = False  # TESTING would otherwise keep Flask-Mail from sending
    handler = pipelining_server.handler
    handler.reply_for["unknown@example.org"] = NO_SUCH_USER
    handler.reply_for["busy@example.org"] = [TRY_LATER]
    event = SimpleNamespace(id=7, title="Sports day", priority="normal", location="Field",
                            description="Bring water.\n.A line that starts with a dot\n.",
                            starts_at=datetime(2031, 6, 1, 9, tzinfo=timezone.utc),
                            ends_at=datetime(2031, 6, 1, 15, tzinfo=timezone.utc))
    people = ["first@example.org", "unknown@example.org", "second@example.org", "busy@example.org",
              "third@example.org"]
    outcomes = {}
    with app.app_context():
        letter = Letter(event, 3)
        with transport.SmtpSession() as outbox:
            for number, address in enumerate(people, start=1):
                recipient = SimpleNamespace(id=number, email=address, name="Ada Adams", children="")
                try:
                    outbox.send(letter.render(recipient))
                    outcomes[address] = "sent"
                except transport.SendError as exc:
                    outcomes[address] = (exc.kind, exc.reply)
            assert outbox.connection.host.has_extn("pipelining"), "the server's offer was not seen"

    assert outcomes == {
        "first@example.org": "sent",
        "unknown@example.org": (transport.REFUSED, NO_SUCH_USER),
        "second@example.org": "sent",
        "busy@example.org": (transport.DEFERRED, TRY_LATER),
        "third@example.org": "sent",
    }
    received = handler.received
    assert [m.rcpt for m in received] == ["first@example.org", "second@example.org", "third@example.org"]
    assert [m.message_id for m in received] == ["<job3.n1@school.example.org>", "<job3.n3@school.example.org>",
                                                "<job3.n5@school.example.org>"]
    text = received[-1].message.get_body(("plain",)).get_content()
    assert "\n.A line that starts with a dot\n.\n" in text.replace("\r\n", "\n")


# --- pipelining across messages: a message's content goes with the next one's MAIL, RCPT and DATA ---

class DroppingHandler(PipeliningHandler):
    """Drops the connection, without a reply, when the content for an address in ``drop`` arrives."""

    def __init__(self):
        super().__init__()
        self.drop: set[str] = set()

    async def handle_DATA(self, server, session, envelope):
        if self.drop & set(envelope.rcpt_tos):
            self.drop -= set(envelope.rcpt_tos)
            server.transport.abort()
            return "421 4.4.2 dropped"
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def dropping_server():
    controller = Controller(DroppingHandler(), hostname="127.0.0.1", port=free_port(), ready_timeout=10)
    controller.start()
    yield controller
    controller.stop()


def submit_all(app, addresses: list[str]) -> dict[str, object]:
    """Every address sent with ``submit`` over one session, then ``flush``: each outcome by address."""
    outcomes = {}
    with app.app_context():
        letter = Letter(SimpleNamespace(id=7, title="Sports day", priority="normal", location="Field",
                                        description="Bring water.",
                                        starts_at=datetime(2031, 6, 1, 9, tzinfo=timezone.utc),
                                        ends_at=datetime(2031, 6, 1, 15, tzinfo=timezone.utc)), 3)
        with transport.SmtpSession() as outbox:
            landed = []
            for number, address in enumerate(addresses, start=1):
                recipient = SimpleNamespace(id=number, email=address, name="Ada Adams", children="")
                landed += outbox.submit(letter.render(recipient), address)
            landed += outbox.flush()
    for address, error in landed:
        assert address not in outcomes, f"{address} had two outcomes"
        outcomes[address] = "sent" if error is None else (error.kind, error.reply)
    return outcomes


def test_refusals_in_the_middle_of_pipelined_messages_reach_the_right_recipient(app_on, sqlite_url,
                                                                               pipelining_server):
    app = app_on(sqlite_url, MAIL_PORT=str(pipelining_server.port))
    app.extensions["mail"].suppress = False
    handler = pipelining_server.handler
    handler.reply_for["unknown@example.org"] = NO_SUCH_USER
    handler.reply_for["busy@example.org"] = [TRY_LATER]
    handler.reply_for["gone@example.org"] = NO_SUCH_USER
    people = ["first@example.org", "unknown@example.org", "gone@example.org", "second@example.org",
              "busy@example.org", "third@example.org", "fourth@example.org"]

    assert submit_all(app, people) == {
        "first@example.org": "sent",
        "unknown@example.org": (transport.REFUSED, NO_SUCH_USER),
        "gone@example.org": (transport.REFUSED, NO_SUCH_USER),
        "second@example.org": "sent",
        "busy@example.org": (transport.DEFERRED, TRY_LATER),
        "third@example.org": "sent",
        "fourth@example.org": "sent",
    }
    received = handler.received
    assert [m.rcpt for m in received] == ["first@example.org", "second@example.org", "third@example.org",
                                          "fourth@example.org"]
    assert [m.message_id for m in received] == ["<job3.n1@school.example.org>", "<job3.n4@school.example.org>",
                                                "<job3.n6@school.example.org>", "<job3.n7@school.example.org>"]


def test_a_connection_dropped_mid_group_leaves_only_the_unconfirmed_to_send_again(app_on, sqlite_url,
                                                                                dropping_server):
    app = app_on(sqlite_url, MAIL_PORT=str(dropping_server.port))
    app.extensions["mail"].suppress = False
    handler = dropping_server.handler
    handler.drop.add("c@example.org")
    people = ["a@example.org", "b@example.org", "c@example.org", "d@example.org", "e@example.org"]

    first = submit_all(app, people)
    confirmed = [address for address, outcome in first.items() if outcome == "sent"]
    unconfirmed = [address for address in people if address not in confirmed]
    # c's content went with d's envelope when the connection dropped: neither is confirmed; e went
    # over a new connection.
    assert set(first) == set(people), "a message in the dropped group had no outcome"
    assert confirmed == ["a@example.org", "b@example.org", "e@example.org"]
    assert {first[address][0] for address in unconfirmed} == {transport.OUTAGE}
    assert unconfirmed == ["c@example.org", "d@example.org"]

    again = submit_all(app, unconfirmed)  # what a batch sends on its next pass
    assert set(again.values()) == {"sent"}
    assert sorted(m.rcpt for m in handler.received) == sorted(people), "someone got it twice or not at all"
