"""Ask the app itself, in the bench's environment, what the bench needs to know.

``python -m bench.probe message EVENT_ID`` writes one notification email of that event to stdout,
rendered exactly as a consumer renders it (the ceiling run sends these bytes over and over).
``python -m bench.probe count AUDIENCE_JSON`` prints how many distinct addresses it reaches.
"""
import json
import sys
from types import SimpleNamespace

from school import create_app
from school.events.models import Event
from school.extensions import db
from school.notify.letter import Letter
from school.roster.audience import Audience, count


def message(event_id: int) -> bytes:
    event = db.session.get(Event, event_id)
    recipient = SimpleNamespace(id=1, email="guardian1@example.org", name="Ada Adams", children="Ben Adams")
    return Letter(event, event.job.id).render(recipient).data


def main() -> None:
    command, argument = sys.argv[1], sys.argv[2]
    with create_app().app_context():
        if command == "message":
            sys.stdout.buffer.write(message(int(argument)))
        elif command == "count":
            print(count(Audience.from_dict(json.loads(argument))).recipients)
        else:
            raise SystemExit(f"unknown probe {command}")


if __name__ == "__main__":
    main()
