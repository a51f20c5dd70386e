"""Health endpoints against a real Redis, a real SMTP server and a real consumer process.

/health and /health/ready need no login (load balancers poll them), but /health/ready tells a
stranger only whether the app is ready and what fails; its details, /health/queue and
/health/cache need an admin's session or an API token.
"""
import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.accounts import ADMIN_EMAIL, ADMIN_PASSWORD, STAFF, AuthActions, add_user
from tests.support.host import free_port, wait_for
from tests.support.school import build_app
from tests.support.smtp import RecordingHandler, SmtpServer

pytestmark = pytest.mark.slow

ONE_GRADE = {"roles": ["guardians"], "grades": [7], "classes": []}


def bearer(school) -> dict:
    return {"Authorization": f"Bearer {school.token}"}


def test_health_answers_without_touching_any_dependency(make_school):
    # Nothing listens on these ports: liveness must not care.
    school = make_school(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", MAIL_PORT=free_port())
    response = school.app.test_client().get("/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def ready_details(school):
    """/health/ready as an API token sees it."""
    return school.app.test_client().get("/health/ready", headers=bearer(school))


def ready_when(school, status: int, details: bool = True):
    """/health/ready once it answers ``status``: a change shows when the last answer (kept for a
    second or two) runs out."""
    client = school.app.test_client()
    headers = bearer(school) if details else {}
    return wait_for(lambda: (r := client.get("/health/ready", headers=headers)).status_code == status and r, 10,
                    message=f"/health/ready never answered {status}")


def test_ready_tells_strangers_only_whether_it_is_ready_and_what_fails(make_school, redis_server, smtp_server):
    school = make_school(redis=redis_server, smtp=smtp_server)
    anonymous = school.app.test_client()
    response = anonymous.get("/health/ready")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "failing": []}
    forged = anonymous.get("/health/ready", headers={"Authorization": "Bearer sk_not-a-real-token"})
    assert forged.json == {"status": "ok", "failing": []}

    smtp_server.stop()
    refused = ready_when(school, 503, details=False)
    assert refused.json == {"status": "degraded", "failing": ["smtp"]}
    text = refused.get_data(as_text=True)
    for inside in ("127.0.0.1", str(smtp_server.port), str(redis_server.port), str(school.data_dir), "redis://",
                   "Error", "maxmemory"):
        assert inside not in text, inside

    staff = school.app.test_client()
    from school.auth.services import save_user

    with school.app.app_context():
        save_user("office@springfield-school.example.org", "staff-password-1", "staff")
    AuthActions(staff).login("office@springfield-school.example.org", "staff-password-1")
    assert staff.get("/health/ready").json == {"status": "degraded", "failing": ["smtp"]}
    admin = school.app.test_client()
    AuthActions(admin).login(ADMIN_EMAIL, ADMIN_PASSWORD)
    assert admin.get("/health/ready").json["checks"]["smtp"]["server"] == f"127.0.0.1:{smtp_server.port}"


class CountingHandler(RecordingHandler):
    """Also counts the NOOPs it is sent: one per readiness check of the SMTP server."""

    def __init__(self):
        super().__init__()
        self.noops = 0

    async def handle_NOOP(self, server, session, envelope, arg):
        with self.lock:
            self.noops += 1
        return "250 OK"


def test_many_concurrent_probes_share_one_round_of_checks(make_school, live_server):
    """200 load balancer probes at once: each gets 200, and the SMTP server sees one check, not 200
    (nor does any probe find a check "still busy" and call it a failure)."""
    smtp = SmtpServer()
    smtp.handler = CountingHandler()
    smtp.start()
    try:
        school = make_school(smtp=smtp)
        school.app.config["READY_CACHE_SECONDS"] = 60  # every probe of the burst falls in one interval
        server = live_server(school.app)
        start = threading.Barrier(200)

        def probe(_):
            start.wait()
            try:
                with urllib.request.urlopen(server.url + "/health/ready", timeout=60) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        with ThreadPoolExecutor(200) as pool:
            answers = list(pool.map(probe, range(200)))
        assert [status for status, _ in answers] == [200] * 200, [a for a in answers if a[0] != 200][:3]
        assert all(body == {"status": "ok", "failing": []} for _, body in answers)
        assert smtp.handler.noops == 1
    finally:
        smtp.stop()


def test_ready_reports_each_dependency_to_a_token(make_school, redis_server, smtp_server):
    school = make_school(redis=redis_server, smtp=smtp_server)
    response = ready_details(school)
    assert response.status_code == 200, response.json
    body = response.json
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis", "smtp"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["redis"]["latency_ms"] >= 0
    assert body["checks"]["redis"]["url"] == redis_server.url
    assert body["checks"]["smtp"]["server"] == f"127.0.0.1:{smtp_server.port}"


def test_ready_says_503_naming_redis_when_redis_is_stopped(make_school, redis_server, smtp_server):
    school = make_school(redis=redis_server, smtp=smtp_server)
    assert ready_details(school).status_code == 200

    redis_server.stop()
    response = ready_when(school, 503)
    assert response.json["status"] == "degraded"
    assert response.json["failing"] == ["redis"]
    assert "redis" in response.json["error"]
    assert response.json["checks"]["redis"]["ok"] is False
    assert response.json["checks"]["database"]["ok"] is True
    assert response.json["checks"]["smtp"]["ok"] is True

    redis_server.start()  # a new, empty Redis on the same port: ready again
    ready_when(school, 200)


def test_ready_says_503_naming_smtp_when_the_mail_server_is_down(make_school, redis_server, smtp_server):
    school = make_school(redis=redis_server, smtp=smtp_server)
    smtp_server.stop()
    response = ready_details(school)
    assert response.status_code == 503
    assert response.json["failing"] == ["smtp"]


def test_ready_on_the_embedded_queue(make_school, smtp_server):
    school = make_school(smtp=smtp_server)
    response = ready_details(school)
    assert response.status_code == 200
    assert response.json["checks"]["queue"]["backend"] == "sqlite"
    assert response.json["warnings"] == []


def test_ready_warns_when_redis_would_lose_the_queue(make_school, redis_server, smtp_server):
    school = make_school(redis=redis_server, smtp=smtp_server)
    settings = redis_server.client()

    settings.config_set("maxmemory-policy", "allkeys-lru")
    warnings = ready_details(school).json["warnings"]
    assert any("maxmemory-policy is allkeys-lru" in w for w in warnings), warnings
    assert any("persistence is off" in w for w in warnings), warnings  # the test server saves nothing

    settings.config_set("maxmemory-policy", "noeviction")
    settings.config_set("appendonly", "yes")
    response = wait_for(lambda: (r := ready_details(school)).json["warnings"] == [] and r, 10)
    assert response.status_code == 200  # a warning is not a failure


def test_details_need_an_admin_or_a_token(make_school, redis_server):
    school = make_school(redis=redis_server)
    add_user(school.app, STAFF)
    for path in ("/health/queue", "/health/cache", "/metrics"):
        anonymous = school.app.test_client()
        assert anonymous.get(path).status_code == 401, path
        assert anonymous.get(path, headers={"Authorization": "Bearer sk_not-a-real-token"}).status_code == 401
        assert anonymous.get(path, headers=bearer(school)).status_code == 200, path

        staff = AuthActions.logged_in(school.app, STAFF).client
        assert staff.get(path).status_code == 403, path

        admin = school.admin().client
        assert admin.get(path).status_code == 200, path


def _queue(school) -> dict:
    response = school.client.get("/health/queue", headers=bearer(school))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json


def test_queue_shows_waiting_tasks_consumers_and_what_was_sent(make_school, redis_server, smtp_server, consumer):
    school = make_school(students=60, redis=redis_server, smtp=smtp_server, NOTIFY_BATCH_SIZE=10)
    created = school.create_event(ONE_GRADE)

    before = _queue(school)
    assert before["tasks"]["waiting"] == 1  # the fan-out, with no consumer to take it
    assert before["jobs"]["queued"] == 1
    assert before["consumers"] == {"alive": 0, "gone": 0, "list": []}

    worker = consumer(school, workers=3, HEARTBEAT_INTERVAL=1)
    job = school.wait_job_done(created["job_id"], 60)
    received = len(smtp_server.received)
    assert received == job["sent"] > 0

    after = wait_for(lambda: (q := _queue(school))["consumers"]["alive"] == 1 and q["jobs"]["done"] == 1
                     and q["sent_last"]["15m"] == received and q, 10)
    [seen] = after["consumers"]["list"]
    assert (seen["pid"], seen["workers"], seen["state"]) == (worker.pid, 3, "alive")
    assert seen["seconds_since_seen"] <= 3
    assert after["tasks"] == {"waiting": 0, "scheduled": 0}
    assert after["jobs_running"] == 0 and after["jobs"]["done"] == 1
    assert after["batches_in_flight"] == 0
    assert after["sent_last"] == {"1m": received, "5m": received, "15m": received}


def test_queue_shows_a_scheduled_retry(make_school, redis_server, smtp_server, consumer):
    school = make_school(students=12, redis=redis_server, smtp=smtp_server, NOTIFY_RETRY_DELAY=120)
    created = school.create_event({"roles": ["teachers"], "grades": [], "classes": []})
    teacher = school.sql("SELECT email FROM teachers WHERE email IS NOT NULL ORDER BY email LIMIT 1")[0][0]
    smtp_server.reply_for[teacher] = "451 4.3.0 Mailbox busy, try later"
    consumer(school, workers=2, HEARTBEAT_INTERVAL=1)

    state = wait_for(lambda: (q := _queue(school))["tasks"]["scheduled"] == 1 and q["batches_waiting_to_retry"] == 1
                     and q, 30, message="no retry was scheduled")
    assert state["jobs"]["running"] == 1
    assert school.job(created["job_id"])["pending"] == 1


def test_cache_counts_hits_and_misses(make_school, redis_server):
    school = make_school(redis=redis_server)
    admin = school.admin().client

    start = admin.get("/health/cache").json
    assert start["backend"] == "redis"
    admin.get("/")
    admin.get("/")
    stats = admin.get("/health/cache").json
    assert stats["misses"] == start["misses"] + 1
    assert stats["hits"] == start["hits"] + 1
    assert stats["hit_rate"] == round(stats["hits"] / (stats["hits"] + stats["misses"]), 4)


def test_ready_says_503_naming_the_database_when_it_does_not_answer(make_school, smtp_server):
    """A PostgreSQL address that accepts connections and then says nothing (a hung server, a
    half-open network path): readiness still answers, and names the database."""
    import socket

    from school.health import checks

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever speaks
    try:
        school = make_school(smtp=smtp_server)
        env = {**school.env, "DATABASE_URL": f"postgresql://school@127.0.0.1:{silent.getsockname()[1]}/school"}
        app = build_app(env)
        response = app.test_client().get("/health/ready")  # anonymous: a token would need the database
        assert response.status_code == 503
        assert response.json == {"status": "degraded", "failing": ["database"]}

        def details() -> dict:
            with app.test_request_context():
                return checks.readiness()[1]

        body = details()
        assert "no answer within" in body["checks"]["database"]["error"]
        assert body["checks"]["queue"]["ok"] and body["checks"]["smtp"]["ok"]
        # Still hung once the answer above has run out: no second connection piles up behind it.
        wait_for(lambda: "previous check" in details()["checks"]["database"]["error"], 15)
    finally:
        silent.close()
