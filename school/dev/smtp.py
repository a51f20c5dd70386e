"""A local SMTP server for development that keeps every message it receives.

``python -m school.dev.smtp --dir instance/mailbox --port 8025`` accepts any mail on 127.0.0.1 and
writes each message to its own file, which ``/dev/mailbox`` shows. It never relays anything.
"""
import argparse
import signal
import sys
import threading
from pathlib import Path

from aiosmtpd.controller import Controller

from .mailbox import store


class MailboxHandler:
    """aiosmtpd handler: store the message, then say 250 so the sender counts it as delivered."""

    def __init__(self, directory: Path):
        self.directory = directory

    async def handle_DATA(self, server, session, envelope):
        store(self.directory, envelope.original_content, envelope.mail_from or "", list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


def serve(directory: Path, host: str, port: int) -> Controller:
    directory.mkdir(parents=True, exist_ok=True)
    controller = Controller(MailboxHandler(directory), hostname=host, port=port)
    controller.start()  # returns once the server answers
    return controller


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m school.dev.smtp", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="where to write the messages")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    controller = serve(args.dir, args.host, args.port)
    print(f"Development SMTP server on {args.host}:{controller.port}, storing mail in {args.dir}", flush=True)
    try:
        while not stop.wait(1):
            pass
    finally:
        controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
