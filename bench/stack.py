"""The services a benchmark runs against, all started by the bench on free loopback ports.

``Stack`` holds one seeded school in its own database (PostgreSQL + Redis, or the embedded
SQLite default), gunicorn serving the app, an smtp-sink, and starts huey consumers per run.
Fan-out runs are remembered, so benchmarks sharing a stack reuse each other's runs.
"""
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import psycopg

from school import config

from . import tools

ROOT = Path(__file__).resolve().parent.parent
# The server the bench creates its database on (and drops it from afterwards).
BASE_DATABASE_URL = (os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
                     or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
USER_EMAIL = "bench@school.example.org"
USER_PASSWORD = "bench-" + secrets.token_hex(8)


def class_names(grade: int, count: int) -> list[str]:
    """The demo school's first ``count`` class names of a grade: 7A ... 7Z, 7AA, 7AB ..."""
    names = []
    for index in range(1, count + 1):
        letters = ""
        while index:
            index, rest = divmod(index - 1, 26)
            letters = chr(ord("A") + rest) + letters
        names.append(f"{grade}{letters}")
    return names


def audiences(students: int) -> dict[str, dict]:
    """Audiences by what they are for, on the demo school of ``students`` students (12 grades,
    classes of 25, students with an email from grade 7). On 100,000 students:"""
    classes_per_grade = -(-(-(-students // 12)) // 25)
    return {
        # 10: the class teachers of nine classes of grade 1 and the grade's subject teacher.
        "ten": {"roles": ["teachers"], "grades": [], "classes": class_names(1, min(9, classes_per_grade))},
        # about 152,000: everybody.
        "school": {"roles": ["guardians", "students", "teachers"], "grades": [], "classes": []},
        # about 10,000: the students of grade 7 and of a fifth of grade 8's classes.
        "tenth": {"roles": ["students"], "grades": [7], "classes": class_names(8, round(classes_per_grade / 5))},
        # about 102,000 (the "100,000"): every guardian and every teacher.
        "large": {"roles": ["guardians", "teachers"], "grades": [], "classes": []},
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: "Process | None" = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited with {process.popen.returncode}:\n{process.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


# --- processes ------------------------------------------------------------------------------

@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def status_kb(self, field_name: str) -> int | None:
        """A memory figure (VmHWM, VmRSS) from /proc, in kB; None once the process is gone."""
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.M)
        return int(match.group(1)) if match else None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Signal the process group this bench started, then kill it if it does not go."""
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(5)


class Processes:
    """Every process a stack starts, each in its own process group, stopped by its own id."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.running: list[Process] = []
        self.counter = 0

    def start(self, name: str, argv: list[str], env: dict | None = None, cwd: Path = ROOT) -> Process:
        self.counter += 1
        log = self.logs / f"{self.counter:02d}-{name}.log"
        handle = open(log, "wb")
        popen = subprocess.Popen(argv, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        handle.close()
        process = Process(name, popen, log)
        self.running.append(process)
        return process

    def stop(self, process: Process, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        process.stop(sig, timeout)
        if process in self.running:
            self.running.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.running)):
            self.stop(process)


# --- HTTP -----------------------------------------------------------------------------------

class Client:
    """A plain keep-alive HTTP client (gunicorn's sync workers close after each response; then
    ``http.client`` reconnects on its own), with a cookie jar for the session."""

    def __init__(self, port: int, token: str | None = None):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.token = token
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, bytes, float]:
        """Status, body and seconds taken (sending to last byte read)."""
        headers = dict(headers or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        started = time.perf_counter()
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self.connection.close()  # the server closed an idle keep-alive connection: once more
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
        data = response.read()
        seconds = time.perf_counter() - started
        for header in response.headers.get_all("Set-Cookie") or []:
            for morsel in SimpleCookie(header).values():
                self.cookies[morsel.key] = morsel.value
        return response.status, data, seconds

    def post_json(self, path: str, payload: dict) -> tuple[int, dict, float]:
        status, data, seconds = self.request("POST", path, json.dumps(payload).encode(),
                                             {"Content-Type": "application/json"})
        return status, json.loads(data or b"{}"), seconds

    def get_json(self, path: str) -> tuple[int, dict, float]:
        status, data, seconds = self.request("GET", path, headers={"Accept": "application/json"})
        return status, json.loads(data or b"{}"), seconds

    def log_in(self, email: str, password: str) -> None:
        """Through the login form, with the CSRF token the form carries."""
        status, page, _ = self.request("GET", "/login")
        match = re.search(rb'name="csrf_token" value="([^"]+)"', page)
        if status != 200 or not match:
            raise RuntimeError(f"GET /login answered {status} without a CSRF token")
        form = urlencode({"csrf_token": match.group(1).decode(), "email": email, "password": password}).encode()
        status, _, _ = self.request("POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 302:
            raise RuntimeError(f"logging in answered {status}, not a redirect")

    def close(self) -> None:
        self.connection.close()


def event_payload(audience: dict, title: str = "Parents' evening") -> dict:
    return {
        "title": title,
        "description": "Meet the teachers and see your children's work.\nRefreshments in the hall.",
        "location": "Main hall",
        "starts_at": "2031-03-05T18:00:00Z",
        "ends_at": "2031-03-05T20:00:00Z",
        "audience": audience,
        "priority": "normal",
    }


# --- runs -----------------------------------------------------------------------------------

@dataclass
class FanoutRun:
    """One event sent to its whole audience by ``consumers`` processes of ``threads`` threads."""

    audience: str
    consumers: int
    threads: int
    event_id: int
    recipients: int
    seconds: float
    fanout_seconds: float | None
    peak_rss_kb: list[int]
    sent: int
    failed: int
    extra: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.recipients / self.seconds if self.seconds else 0.0


class Stack:
    """A school of ``students`` on PostgreSQL + Redis (``backend="postgres"``) or on the embedded
    SQLite default (``backend="sqlite"``), served by gunicorn, mailing into smtp-sink."""

    def __init__(self, students: int = 100_000, backend: str = "postgres", threads: int = 8, verbose: bool = True):
        self.students = students
        self.audiences = audiences(students)
        self.backend = backend
        self.threads = threads
        self.verbose = verbose
        self.runs: dict[tuple, FanoutRun] = {}
        self.sizes: dict[str, int] = {}
        self.memo: dict[str, object] = {}
        self.overrides: dict[str, str] = {}  # settings of the consumers started from now on

    def say(self, message: str) -> None:
        if self.verbose:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    # -- lifecycle --

    def __enter__(self) -> "Stack":
        self.workdir = Path(tempfile.mkdtemp(prefix="school-bench-"))
        (self.workdir / "logs").mkdir()
        self.processes = Processes(self.workdir / "logs")
        self.database_name = None
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        self.huey_name = f"bench-{secrets.token_hex(4)}"
        self.smtp_port = free_port()
        self.smtp_sink = self.processes.start(
            "smtp-sink", [tools.smtp_sink()] + (["-u", "nobody"] if os.geteuid() == 0 else [])
            + [f"127.0.0.1:{self.smtp_port}", "1000"])
        wait_for_port(self.smtp_port, 10, self.smtp_sink)
        if self.backend == "postgres":
            self.redis_port = free_port()
            self.redis = self.processes.start("redis", [
                shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port),
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir)])
            wait_for_port(self.redis_port, 10, self.redis)
            self.database_url = self._create_database()
        else:
            self.redis_port = None
            self.database_url = None
        self.say(f"migrating and seeding a school of {self.students:,} students ({self.backend})")
        started = time.monotonic()
        self.flask("db", "upgrade")
        self.flask("seed-demo", "--students", str(self.students))
        self.flask("create-user", USER_EMAIL, "--password", USER_PASSWORD, "--role", "admin")
        self.token = self.flask("create-token", USER_EMAIL).strip().splitlines()[-1]
        self.seed_seconds = time.monotonic() - started
        self.say(f"seeded in {self.seed_seconds:.1f} s")
        self.http_port = free_port()
        self.gunicorn = self.processes.start("gunicorn", [
            tools.executable("gunicorn"), "wsgi:app", "-w", "2", "-b", f"127.0.0.1:{self.http_port}"], self.env())
        wait_for_port(self.http_port, 30, self.gunicorn)
        self.gunicorn_command = f"gunicorn wsgi:app -w 2 -b 127.0.0.1:{self.http_port}"

    def __exit__(self, *exc_info) -> None:
        self.processes.stop_all()
        if self.database_name:
            self._drop_database()
        if exc_info[0] is not None:
            print(f"logs kept in {self.workdir}/logs", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- configuration --

    def env(self, **extra) -> dict:
        # The bench decides every setting the app reads: nothing leaks in from the caller.
        settings = config.variable_names()
        env = {k: v for k, v in os.environ.items() if k not in settings and not k.startswith("FLASK_")}
        env.update({
            "APP_ENV": "production",
            "SECRET_KEY": "bench-" + self.huey_name,
            "DATA_DIR": str(self.workdir / "data"),
            "HUEY_NAME": self.huey_name,
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": str(self.smtp_port),
            "MAIL_RATE_LIMIT": "0",
            "PUBLIC_URL": "http://school.example.org",
            "FAMILY_LIMIT_PER_ADDRESS": "1000000 per minute",  # the bench is one address asking a lot
            "PYTHONUNBUFFERED": "1",
        })
        if self.backend == "postgres":
            env["DATABASE_URL"] = self.database_url
            env["REDIS_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"
        else:
            env["APP_ENV"] = "development"  # production insists on PostgreSQL and Redis
        env.update(self.overrides)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def probe(self, *args: str) -> bytes:
        """Output of ``bench.probe`` run in the app's environment."""
        result = subprocess.run([sys.executable, "-m", "bench.probe", *args], cwd=ROOT, env=self.env(),
                                capture_output=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"bench.probe {' '.join(args)} failed:\n{result.stderr.decode(errors='replace')}")
        return result.stdout

    def flask(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT, env=self.env(),
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"flask {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    # -- database --

    def _create_database(self) -> str:
        self.database_name = f"bench_{secrets.token_hex(4)}"
        with psycopg.connect(_libpq(BASE_DATABASE_URL), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database_name}"')
        parts = urlsplit(BASE_DATABASE_URL)
        return parts._replace(path="/" + self.database_name).geturl()

    def _drop_database(self) -> None:
        try:
            with psycopg.connect(_libpq(BASE_DATABASE_URL), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)')
        except psycopg.Error as exc:
            print(f"could not drop database {self.database_name}: {exc}", file=sys.stderr)
        self.database_name = None

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        """One statement in its own short transaction."""
        if self.backend == "postgres":
            if getattr(self, "_pg", None) is None or self._pg.closed:
                self._pg = psycopg.connect(_libpq(self.database_url), autocommit=True)
            cursor = self._pg.execute(query, params)
            return cursor.fetchall() if cursor.description else []
        import sqlite3

        conn = sqlite3.connect(self.workdir / "data" / "school.db", timeout=30)
        try:
            with conn:  # commits
                return conn.execute(query.replace("%s", "?"), params).fetchall()
        finally:
            conn.close()

    def server_version(self) -> str:
        if self.backend == "postgres":
            return "PostgreSQL " + self.sql("SHOW server_version")[0][0]
        import sqlite3

        return "SQLite " + sqlite3.sqlite_version

    def clear_runs(self) -> None:
        """Drop the rows of finished jobs, so each run starts from the same tables."""
        if self.backend == "postgres":
            self.sql("TRUNCATE notifications, notification_batches")
            self.sql("VACUUM ANALYZE")
        else:
            self.sql("DELETE FROM notifications")
            self.sql("DELETE FROM notification_batches")

    def cancel_open_jobs(self) -> int:
        """Jobs created only to time their creation must never be sent by a later run's consumers."""
        rows = self.sql("UPDATE notification_jobs SET status = 'canceled' "
                        "WHERE status IN ('queued', 'running', 'paused') RETURNING id")
        return len(rows)

    # -- HTTP --

    def client(self, token: bool = True) -> Client:
        return Client(self.http_port, self.token if token else None)

    def create_event(self, client: Client, audience: str, title: str = "Parents' evening") -> tuple[int, float]:
        """Job id and seconds the request took."""
        status, body, seconds = client.post_json("/api/events", event_payload(self.audiences[audience], title))
        if status != 202:
            raise RuntimeError(f"POST /api/events answered {status}: {body}")
        self.last_event_id = body["event_id"]
        return body["job_id"], seconds

    # -- consumers --

    def consumer_args(self, threads: int) -> list[str]:
        # On the SQLite queue workers poll; -m 1 caps their idle back-off at a second (as `make run` does).
        return ["tasks.huey", "-w", str(threads), "-k", "thread"] + (["-m", "1"] if self.backend == "sqlite" else [])

    def start_consumers(self, count: int, threads: int) -> list[Process]:
        consumers = []
        for index in range(count):
            consumers.append(self.processes.start(
                f"consumer{index + 1}", [tools.executable("huey_consumer"), *self.consumer_args(threads)], self.env()))
        deadline = time.monotonic() + 30
        for consumer in consumers:
            while "consumer started" not in consumer.log.read_text(errors="replace").lower():
                if consumer.popen.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{consumer.name} did not start:\n{consumer.tail()}")
                time.sleep(0.05)
        return consumers

    def stop_consumers(self, consumers: list[Process]) -> None:
        for consumer in consumers:
            consumer.popen.send_signal(signal.SIGINT)  # graceful: the queue is empty by now
        for consumer in consumers:
            self.processes.stop(consumer, signal.SIGINT, timeout=20)

    def consumer_command(self, count: int, threads: int) -> str:
        return f"{count} × huey_consumer {' '.join(self.consumer_args(threads))}"

    # -- sending --

    def job_state(self, job_id: int) -> tuple[str, int, bool]:
        status, total, fanout_done = self.sql(
            "SELECT status, total, fanout_done FROM notification_jobs WHERE id = %s", (job_id,))[0]
        return status, total, bool(fanout_done)

    def wait_done(self, job_id: int, started: float, timeout: float,
                  consumers: list[Process] = ()) -> tuple[float, float | None]:
        """Seconds from ``started`` until the job is done, and until its fan-out was written."""
        fanout_at = None
        deadline = started + timeout
        while True:
            status, _total, fanout_done = self.job_state(job_id)
            now = time.perf_counter()
            if fanout_done and fanout_at is None:
                fanout_at = now - started
            if status in ("done", "failed", "canceled"):
                if status != "done":
                    raise RuntimeError(f"job {job_id} ended {status}")
                return now - started, fanout_at
            for consumer in consumers:
                if consumer.popen.poll() is not None:
                    raise RuntimeError(f"{consumer.name} died:\n{consumer.tail()}")
            if now > deadline:
                raise RuntimeError(f"job {job_id} not done after {timeout:.0f} s (status {status})")
            time.sleep(0.05)

    def sent_count(self, job_id: int) -> int:
        return self.sql("SELECT count(*) FROM notifications WHERE job_id = %s AND status = 'sent'", (job_id,))[0][0]

    def outcome(self, job_id: int) -> dict[str, int]:
        return dict(self.sql("SELECT status, count(*) FROM notifications WHERE job_id = %s GROUP BY status",
                             (job_id,)))

    def count_audience(self, audience: str) -> int:
        """Distinct addresses the audience reaches, as the app counts them."""
        if audience not in self.sizes:
            self.sizes[audience] = int(self.probe("count", json.dumps(self.audiences[audience])))
        return self.sizes[audience]

    def flush_queue(self) -> None:
        """Drop every queued task (the fan-outs of events created only to time their creation)."""
        if self.backend == "postgres":
            import redis

            redis.Redis(port=self.redis_port).flushdb()
        else:
            import sqlite3

            with sqlite3.connect(self.workdir / "data" / "queue.db", timeout=30) as conn:
                conn.execute("DELETE FROM task")
                conn.execute("DELETE FROM schedule")

    def fanout(self, audience: str, consumers: int, threads: int | None = None, during=None,
               timeout: float = 900) -> FanoutRun:
        """Create an event for ``audience`` through the API and time it until every row is sent.

        ``during(job_id)``, when given, runs in this process while the job is being sent (its
        result lands in ``FanoutRun.extra``); such runs are not remembered for reuse.
        """
        threads = threads or self.threads
        key = (audience, consumers, threads)
        if during is None and key in self.runs:
            return self.runs[key]
        self.cancel_open_jobs()
        self.clear_runs()
        self.say(f"fan-out: '{audience}' with {self.consumer_command(consumers, threads)}")
        processes = self.start_consumers(consumers, threads)
        client = self.client()
        try:
            started = time.perf_counter()
            job_id, _ = self.create_event(client, audience, title=f"Bench {audience} {consumers}x{threads}")
            event_id = self.last_event_id
            extra = during(job_id) if during else {}
            seconds, fanout_seconds = self.wait_done(job_id, started, timeout, processes)
            peaks = [p.status_kb("VmHWM") or 0 for p in processes]
        finally:
            client.close()
            self.stop_consumers(processes)
        counts = self.outcome(job_id)
        _status, total, _ = self.job_state(job_id)
        if counts.get("sent", 0) != total:
            raise RuntimeError(f"job {job_id}: {counts} of {total} recipients")
        self.sizes[audience] = total
        run = FanoutRun(audience, consumers, threads, event_id, total, seconds, fanout_seconds, peaks,
                        counts.get("sent", 0), counts.get("failed", 0), extra or {})
        self.say(f"  {total:,} sent in {seconds:.1f} s = {run.rate:,.0f}/s; "
                 f"fan-out written after {fanout_seconds or 0:.1f} s; peak RSS {max(peaks) / 1024:.0f} MB")
        if during is None:
            self.runs[key] = run
        return run


def _libpq(url: str) -> str:
    """The SQLAlchemy URL as libpq understands it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def run_alone(name: str, doc: str, run, argv=None, sweep: bool = False) -> None:
    """``python -m bench.<name>``: one benchmark on a stack and a school of its own."""
    from .report import Report, parse_args

    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(doc, argv, sweep=sweep)
    report = Report(name, argv, record=not args.no_record)
    with Stack(args.students, threads=args.threads or 8) as stack:
        report.header([stack.server_version()])
        if sweep:
            run(stack, report, args.threads)
        else:
            run(stack, report)
    report.summary()
