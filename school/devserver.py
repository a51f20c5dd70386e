"""``python -m school.devserver`` (what ``make run`` starts): the whole app on one machine.

Seeds a demo school when the roster is empty, makes sure the demo admin exists, then runs the web
app, one Huey consumer and the development SMTP server side by side. Each runs in its own process
group, so Ctrl-C reaches only this launcher, which then stops every one of them (and whatever they
started, like the reloader's child) and waits until they are gone.
"""
import argparse
import ipaddress
import os
import secrets
import signal
import socket
import subprocess  # nosec B404  # make run starts its own fixed commands, never input
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

DEMO_ADMIN = "admin@example.org"
DEMO_STUDENTS = 500
STOP_GRACE_SECONDS = 15


# --- getting the data ready -------------------------------------------------------------------

@dataclass(frozen=True)
class DemoLogin:
    email: str
    password: str | None  # None: the account exists with a password this launcher does not know
    password_file: Path


def seed_if_empty() -> str | None:
    from .roster.seed import roster_exists, seed_demo

    if roster_exists():
        return None
    summary = seed_demo(DEMO_STUDENTS)
    return (f"Seeded a demo school: {summary.classes} classes, {summary.students} students, "
            f"{summary.guardians} guardians, {summary.teachers} teachers.")


def ensure_demo_admin(data_dir: Path) -> DemoLogin:
    """Create the demo admin once; its password is kept in DATA_DIR so later runs can print it."""
    from .auth.models import User
    from .auth.services import save_user
    from .extensions import db

    password_file = data_dir / "demo-admin-password"
    stored = password_file.read_text().strip() if password_file.exists() else None
    user = db.session.scalar(select(User).where(User.email == DEMO_ADMIN))
    if user is None:
        password = stored or secrets.token_urlsafe(12)
        save_user(DEMO_ADMIN, password, "admin")
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        return DemoLogin(DEMO_ADMIN, password, password_file)
    if stored and user.check_password(stored):
        return DemoLogin(DEMO_ADMIN, stored, password_file)
    return DemoLogin(DEMO_ADMIN, None, password_file)


def login_text(login: DemoLogin, url: str) -> str:
    if login.password is None:
        return (f"Log in at {url}/login as {login.email} (its password was changed; set a new one with\n"
                f"  .venv/bin/flask --app app create-user {login.email} --role admin)")
    return f"Log in at {url}/login as {login.email} with password {login.password}"


# --- running the services ---------------------------------------------------------------------

@dataclass(frozen=True)
class Service:
    name: str
    argv: tuple[str, ...]
    port: int
    stop_signal: int = signal.SIGTERM


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def services(config: dict, host: str, port: int) -> list[Service]:
    python = (sys.executable, "-u")
    planned = [
        Service("web", python + ("-m", "flask", "--app", "app", "--debug", "run", "--host", host,
                                 "--port", str(port)), port),
        # SIGINT is huey's graceful stop: running tasks finish before it exits.
        Service("queue", python + ("-m", "huey.bin.huey_consumer", "tasks.huey", "-w", "4", "-k", "thread",
                                   "-m", "1"),  # poll the SQLite queue at least once a second
                0, signal.SIGINT),
    ]
    if is_loopback(config["MAIL_SERVER"]):
        from .dev.mailbox import mailbox_dir

        planned.append(Service("smtp", python + ("-m", "school.dev.smtp", "--dir", str(mailbox_dir(config)),
                                                 "--host", "127.0.0.1", "--port", str(config["MAIL_PORT"])),
                               config["MAIL_PORT"]))
    return planned


def _relay(name: str, stream) -> None:
    """Copy a child's output to ours, each line tagged with who said it."""
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"{name:>5} | {line.decode(errors='replace')}")
        sys.stdout.flush()
    stream.close()


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:  # the whole group is already gone
        pass


def stop_all(running: dict[Service, subprocess.Popen]) -> None:
    for service, process in running.items():
        _signal_group(process, service.stop_signal)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in running.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    # Anything still alive in a group (a leader that ignored us, or a grandchild) goes now.
    for process in running.values():
        _signal_group(process, signal.SIGKILL)
        process.wait()


def run(planned: list[Service], ready_message: str) -> int:
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)

    busy = [f"{s.name} (port {s.port})" for s in planned if s.port and _answers(s.port)]
    if busy:
        print("Something else already answers on the ports of: " + ", ".join(busy) + ". Stop it, or choose "
              "other ports (make run PORT=..., MAIL_PORT=... with PUBLIC_URL to match).", file=sys.stderr)
        return 1
    running: dict[Service, subprocess.Popen] = {}
    relays = []
    status = 0
    try:
        for service in planned:
            process = subprocess.Popen(  # nosec B603  # argv built by services() from fixed commands
                service.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True)
            running[service] = process
            relay = threading.Thread(target=_relay, args=(service.name, process.stdout), daemon=True)
            relay.start()
            relays.append(relay)

        waiting = [s for s in planned if s.port]
        while not stop.wait(0.25):
            for service, process in running.items():
                if process.poll() is not None:
                    print(f"\n{service.name} stopped (exit status {process.returncode}); stopping the rest.",
                          flush=True)
                    status = 1
                    stop.set()
            if waiting:
                waiting = [s for s in waiting if not _answers(s.port)]
                if not waiting:
                    print(ready_message, flush=True)
    finally:
        print("\nStopping…", flush=True)
        stop_all(running)
        for relay in relays:
            relay.join(timeout=2)
    if status == 0 and received and received[0] != signal.SIGINT:
        return 128 + received[0]
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m school.devserver", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)

    from . import create_app
    from .extensions import db

    app = create_app()
    if app.config["APP_ENV"] == "production":
        print("make run is for development (it seeds a demo school and creates a demo admin); "
              "see README.md for running in production.", file=sys.stderr)
        return 2
    with app.app_context():
        seeded = seed_if_empty()
        login = ensure_demo_admin(Path(app.config["DATA_DIR"]))
        db.engine.dispose()  # the children open their own connections
    if seeded:
        print(seeded)

    url = f"http://{args.host}:{args.port}"
    planned = services(app.config, args.host, args.port)
    mail_note = (f"Emails: {url}/dev/mailbox (SMTP on 127.0.0.1:{app.config['MAIL_PORT']})"
                 if any(s.name == "smtp" for s in planned)
                 else f"Emails go to {app.config['MAIL_SERVER']}:{app.config['MAIL_PORT']}")
    banner = "\n".join(["", "=" * 72, f"Ready: {url}", login_text(login, url), mail_note,
                        "Press Ctrl-C to stop everything.", "=" * 72, ""])
    print(login_text(login, url), flush=True)
    return run(planned, banner)


if __name__ == "__main__":
    sys.exit(main())
