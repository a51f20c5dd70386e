"""Health endpoints against a real Redis, a real SMTP server and a real consumer process.

/health and /health/ready need no login (load balancers poll them); /health/queue and /health/cache
need an admin's session or an API token.
"""
import pytest

from tests.support.accounts import STAFF, AuthActions, add_user
from tests.support.host import free_port, wait_for
from tests.support.school import build_app

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


def test_ready_reports_each_dependency_and_needs_no_login(make_school, redis_server, smtp_server):
    school = make_school(redis=redis_server, smtp=smtp_server)
    response = school.app.test_client().get("/health/ready")
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
    client = school.app.test_client()
    assert client.get("/health/ready").status_code == 200

    redis_server.stop()
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json["failing"] == ["redis"]
    assert "redis" in response.json["error"]
    assert response.json["checks"]["redis"]["ok"] is False
    assert response.json["checks"]["database"]["ok"] is True
    assert response.json["checks"]["smtp"]["ok"] is True

    redis_server.start()  # a new, empty Redis on the same port: ready again
    assert client.get("/health/ready").status_code == 200


def test_ready_says_503_naming_smtp_when_the_mail_server_is_down(make_school, redis_server, smtp_server):
    school = make_school(redis=redis_server, smtp=smtp_server)
    smtp_server.stop()
    response = school.app.test_client().get("/health/ready")
    assert response.status_code == 503
    assert response.json["failing"] == ["smtp"]


def test_ready_on_the_embedded_queue(make_school, smtp_server):
    school = make_school(smtp=smtp_server)
    response = school.app.test_client().get("/health/ready")
    assert response.status_code == 200
    assert response.json["checks"]["queue"]["backend"] == "sqlite"
    assert response.json["warnings"] == []


def test_ready_warns_when_redis_would_lose_the_queue(make_school, redis_server, smtp_server):
    school = make_school(redis=redis_server, smtp=smtp_server)
    client = school.app.test_client()
    settings = redis_server.client()

    settings.config_set("maxmemory-policy", "allkeys-lru")
    warnings = client.get("/health/ready").json["warnings"]
    assert any("maxmemory-policy is allkeys-lru" in w for w in warnings), warnings
    assert any("persistence is off" in w for w in warnings), warnings  # the test server saves nothing

    settings.config_set("maxmemory-policy", "noeviction")
    settings.config_set("appendonly", "yes")
    response = client.get("/health/ready")
    assert response.status_code == 200  # a warning is not a failure
    assert response.json["warnings"] == []


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

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever speaks
    try:
        school = make_school(smtp=smtp_server)
        env = {**school.env, "DATABASE_URL": f"postgresql://school@127.0.0.1:{silent.getsockname()[1]}/school"}
        app = build_app(env)
        client = app.test_client()
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.json["failing"] == ["database"]
        assert "no answer within" in response.json["checks"]["database"]["error"]
        assert response.json["checks"]["queue"]["ok"] and response.json["checks"]["smtp"]["ok"]
        again = client.get("/health/ready")  # still hung: no second connection piles up behind it
        assert again.status_code == 503
        assert "previous check" in again.json["checks"]["database"]["error"]
    finally:
        silent.close()
