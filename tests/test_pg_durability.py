"""The database crashes mid-job: a PostgreSQL cluster of the test's own, stopped with
``pg_ctl stop -m immediate`` (no checkpoint, no goodbye: what a power cut or an OOM kill does) while
consumers send, then started again. Nobody loses their notice, and the messages sent twice are the
ones whose "sent" mark the crash took: at most one per worker thread, because consumers commit the
marks synchronously (see school/database.py).

Prints a ``RELIABILITY`` line (``pytest -s``); docs/reliability.md quotes it.
"""
import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from tests.support.faults import tally
from tests.support.host import free_port, wait_for
from tests.support.school import WHOLE_SCHOOL, audience
from tests.test_reliability import QUICK_RECOVERY

BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


class Cluster:
    """A throwaway PostgreSQL cluster (initdb, pg_ctl) on 127.0.0.1, trusting local logins. Run as
    the ``postgres`` user when the tests run as root, as PostgreSQL refuses root."""

    def __init__(self):
        self.bin = Path(BINARIES[-1])
        self.root = Path(tempfile.mkdtemp(prefix="school-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.root, "postgres")
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")

    def run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "start",
                 "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1")

    def crash(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"


@pytest.fixture
def cluster():
    if not BINARIES or (os.geteuid() == 0 and not shutil.which("runuser")):
        pytest.skip("needs PostgreSQL's server binaries under /usr/lib/postgresql (apt-get install postgresql)")
    made = Cluster()
    made.start()
    yield made
    made.stop()


@pytest.fixture
def pg_url(cluster):
    """make_school(database="postgres") builds the school on the test's own cluster."""
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE school")
    return cluster.url("school")


@pytest.mark.slow
def test_database_crash_mid_job(cluster, make_school, redis_server, smtp_server, consumer):
    workers, consumers = 4, 2
    school = make_school(students=1000, database="postgres", redis=redis_server, smtp=smtp_server,
                         **QUICK_RECOVERY)
    expected = audience(school)
    job_id = school.create_event(WHOLE_SCHOOL)["job_id"]
    for _ in range(consumers):
        consumer(school, workers=workers)

    smtp_server.wait_for_count(300, 90)
    cluster.crash()
    at_crash = smtp_server.count()
    assert at_crash < len(expected), "the job ended before the database could be stopped"
    time.sleep(2)
    cluster.start()

    job = school.wait_job_done(job_id, 180)
    wait_for(lambda: smtp_server.count() >= len(expected), 10)
    result = tally("PostgreSQL crashed (pg_ctl stop -m immediate) mid-job", school, smtp_server, job_id, expected,
                   received_at_crash=at_crash, threads=workers * consumers)
    assert result.lost == 0
    assert set(result.per_recipient) == expected, "someone never got the email"
    assert result.duplicates <= workers * consumers, f"{result.duplicates} sent twice: {result.twice[:10]}"
    assert all(len(ids) == 1 for ids in result.message_ids.values())
    assert (job["status"], job["sent"], job["failed"]) == ("done", len(expected), 0)
