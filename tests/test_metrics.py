"""/metrics in Prometheus' format: one answer for the whole system, whichever web process is asked.

Two gunicorn servers (two web processes each) and two consumer processes share a real Redis; each
server creates one event, the consumers send them, and every scrape of either server must report
both events, every message and both consumers.
"""
import subprocess
import urllib.request
from contextlib import contextmanager

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.host import BIN, ROOT, free_port, wait_for

pytestmark = pytest.mark.slow

ONE_GRADE = {"roles": ["guardians", "students"], "grades": [8], "classes": []}
SENT = ("school_messages_total", (("outcome", "sent"),))
EVENT = {"title": "Science fair", "description": "Projects in the hall.", "location": "Hall",
         "starts_at": "2031-05-01T17:00:00Z", "ends_at": "2031-05-01T19:00:00Z", "audience": ONE_GRADE}


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} for every sample of an exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(client_or_url, token: str) -> dict[tuple, float]:
    headers = {"Authorization": f"Bearer {token}"}
    if isinstance(client_or_url, str):
        request = urllib.request.Request(client_or_url + "/metrics", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            return samples(response.read().decode())
    response = client_or_url.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return samples(response.get_data(as_text=True))


def post_json(url: str, token: str, body: dict) -> dict:
    import json

    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        return json.load(response)


@contextmanager
def gunicorn(env: dict, log_path, workers: int = 2):
    port = free_port()
    with open(log_path, "ab") as log:
        process = subprocess.Popen([str(BIN / "gunicorn"), "wsgi:app", "-w", str(workers), "-b", f"127.0.0.1:{port}"],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def answers():
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as response:
                return response.status == 200
        except OSError:
            return process.poll() is not None  # died: stop waiting, the assert below says so

    try:
        wait_for(answers, 30, 0.2, "gunicorn did not start")
        assert process.poll() is None, open(log_path).read()
        yield url
    finally:
        process.terminate()
        process.wait(20)


def test_every_web_process_reports_the_whole_system(make_school, redis_server, smtp_server, consumer, tmp_path):
    school = make_school(students=80, redis=redis_server, smtp=smtp_server, NOTIFY_BATCH_SIZE=10)
    env = school.consumer_env()
    consumers = [consumer(school, workers=2, HEARTBEAT_INTERVAL=1), consumer(school, workers=3, HEARTBEAT_INTERVAL=1)]
    with gunicorn(env, tmp_path / "web1.log") as web1, gunicorn(env, tmp_path / "web2.log") as web2:
        first = post_json(web1 + "/api/events", school.token, EVENT)
        second = post_json(web2 + "/api/events", school.token, {**EVENT, "title": "Science fair, day two"})
        jobs = [school.wait_job_done(created["job_id"], 90) for created in (first, second)]
        received = len(smtp_server.received)
        assert received == sum(job["sent"] for job in jobs) > 0

        def settled():
            # Consumers add their counts to the store once a second, and beat every second.
            scrapes = [scrape(url, school.token) for url in (web1, web2, web1, web2, web1, web2)]
            return scrapes if all(s[("school_consumers_alive", ())] == 2 and SENT in s and s[SENT] == received
                                  for s in scrapes) else None

        scrapes = wait_for(settled, 10, 0.5, "the consumers and their counts did not show on /metrics")

    for metrics in scrapes:
        assert metrics[SENT] == received
        assert metrics[("school_messages_total", (("outcome", "failed"),))] == 0
        assert metrics[("school_send_duration_seconds_count", ())] == received
        assert metrics[("school_send_duration_seconds_bucket", (("le", "+Inf"),))] == received
        assert metrics[("school_event_create_duration_seconds_count", (("via", "api"),))] == 2
        assert metrics[("school_jobs", (("status", "done"),))] == 2
        assert metrics[("school_jobs", (("status", "running"),))] == 0
        assert metrics[("school_notifications", (("status", "sent"),))] == received
        assert metrics[("school_queue_tasks", (("state", "waiting"),))] == 0
        assert metrics[("school_batches_in_flight", ())] == 0
        assert metrics[("school_consumer_workers", ())] == 5
    assert all(c.alive for c in consumers)


def test_metrics_on_the_embedded_queue_count_what_a_consumer_process_sent(make_school, smtp_server, consumer):
    school = make_school(students=40, smtp=smtp_server)
    created = school.create_event(ONE_GRADE)
    consumer(school, workers=2, HEARTBEAT_INTERVAL=1)
    job = school.wait_job_done(created["job_id"], 60)

    metrics = wait_for(lambda: (m := scrape(school.client, school.token))[("school_consumers_alive", ())] == 1
                       and m.get(SENT) == job["sent"] and m, 10)
    assert job["sent"] == len(smtp_server.received) > 0
    assert metrics[("school_event_create_duration_seconds_count", (("via", "api"),))] == 1


def test_failed_and_deferred_messages_are_counted(make_school, smtp_server, consumer):
    school = make_school(students=12, smtp=smtp_server, NOTIFY_RETRY_DELAY=0.2, NOTIFY_RETRY_BACKOFF=1)
    teachers = [row[0] for row in school.sql("SELECT email FROM teachers WHERE email IS NOT NULL ORDER BY email")]
    smtp_server.reply_for[teachers[0]] = "550 5.1.1 No such user"
    smtp_server.reply_for[teachers[1]] = ["451 4.3.0 Try again later"]
    created = school.create_event({"roles": ["teachers"], "grades": [], "classes": []})
    consumer(school, workers=2)
    job = school.wait_job_done(created["job_id"], 60)
    assert (job["sent"], job["failed"]) == (len(teachers) - 1, 1)

    metrics = wait_for(lambda: (m := scrape(school.client, school.token)).get(SENT) == len(teachers) - 1 and m, 10)
    assert metrics[("school_messages_total", (("outcome", "failed"),))] == 1
    assert metrics[("school_messages_total", (("outcome", "deferred"),))] == 1
    assert metrics[("school_notifications", (("status", "failed"),))] == 1


def test_histogram_buckets_are_cumulative(make_school):
    from school.counters import record

    school = make_school()
    with school.app.app_context():
        for seconds in (0.003, 0.2, 0.2, 50.0):
            record.observe("send", seconds)
    metrics = scrape(school.client, school.token)

    def bucket(le):
        return metrics[("school_send_duration_seconds_bucket", (("le", le),))]

    assert (bucket("0.005"), bucket("0.1"), bucket("0.25"), bucket("30.0"), bucket("+Inf")) == (1, 1, 3, 3, 4)
    assert metrics[("school_send_duration_seconds_count", ())] == 4
    assert metrics[("school_send_duration_seconds_sum", ())] == pytest.approx(50.403)


def test_metrics_still_answer_when_redis_is_down(make_school, redis_server):
    school = make_school(redis=redis_server)
    school.create_event({"roles": ["guardians"], "grades": [], "classes": []})
    redis_server.stop()
    metrics = scrape(school.client, school.token)
    # What the database knows is still there; what lives on Redis is left out, not invented.
    assert metrics[("school_jobs", (("status", "queued"),))] == 1
    assert not any(name == "school_messages_total" for name, _labels in metrics)
