"""The admins' queue dashboard: consumers coming and going, jobs with their bars, the last failures
with the SMTP server's replies, the throughput chart, and Redis settings that would lose work."""
import pytest

from tests.support.browser import Watch, log_in
from tests.support.host import wait_for
from tests.support.pages import parse
from tests.support.school import WHOLE_SCHOOL

pytestmark = pytest.mark.slow

def panel(client):
    response = client.get("/admin/queue/panel")
    assert response.status_code == 200
    return parse(response.data).by_id("queue-panel")


def stat(page, name: str) -> str:
    return page.find("dd", data_stat=name).text


def consumer_row(page, worker):
    rows = [row for row in page.find_all("tr") if (row.attrs.get("data-consumer") or "").endswith(f":{worker.pid}")]
    return rows[0] if rows else None


def test_the_page_polls_its_panel_every_two_seconds(make_school):
    school = make_school()
    page = parse(school.admin().client.get("/admin/queue").data)
    polled = page.by_id("queue-panel")
    assert polled.attrs["hx-get"] == "/admin/queue/panel"
    assert polled.attrs["hx-trigger"] == "every 2s"


def test_a_consumer_appears_then_shows_gone_after_it_is_killed(make_school, redis_server, consumer):
    school = make_school(redis=redis_server)
    client = school.admin().client
    assert stat(panel(client), "consumers-alive") == "0"

    worker = consumer(school, workers=3, HEARTBEAT_INTERVAL=1)
    row = wait_for(lambda: consumer_row(panel(client), worker), 15, 0.2, "the consumer never showed up")
    assert row.attrs["data-state"] == "alive"
    assert [cell.text for cell in row.find_all("td")][2:4] == [str(worker.pid), "3"]
    assert stat(panel(client), "consumers-alive") == "1"
    assert stat(panel(client), "workers") == "3"

    worker.kill()  # kill -9: no goodbye
    # Gone once its heartbeat is three intervals old; a poll or two of slack on top.
    wait_for(lambda: consumer_row(panel(client), worker).attrs["data-state"] == "gone", 3 + 3, 0.2,
             "the killed consumer still showed as alive")
    assert stat(panel(client), "consumers-alive") == "0"


def test_a_consumer_stopped_cleanly_shows_stopped(make_school, consumer):
    school = make_school()  # the embedded queue: heartbeats live beside it
    client = school.admin().client
    worker = consumer(school, workers=2, HEARTBEAT_INTERVAL=1)
    wait_for(lambda: consumer_row(panel(client), worker), 15, 0.2, "the consumer never showed up")
    assert worker.stop() is not None  # SIGINT, graceful
    assert consumer_row(panel(client), worker).attrs["data-state"] == "stopped"


def test_running_jobs_failures_and_throughput(make_school, redis_server, smtp_server, consumer):
    school = make_school(students=60, redis=redis_server, smtp=smtp_server, MAIL_RATE_LIMIT="40/second",
                         NOTIFY_BATCH_SIZE=20)
    refused = school.sql("SELECT email FROM teachers WHERE email IS NOT NULL ORDER BY email LIMIT 1")[0][0]
    smtp_server.reply_for[refused] = "550 5.1.1 <{}>: Recipient address rejected".format(refused)
    client = school.admin().client
    created = school.create_event(WHOLE_SCHOOL, title="Sports day")
    consumer(school, workers=2)

    def running_row():
        row = panel(client).find("tr", data_job=str(created["job_id"]))
        return row if row is not None and row.find("div", role="progressbar") is not None else None

    row = wait_for(running_row, 30, 0.2, "the job never showed as in progress")
    assert "Sports day" in row.text

    job = school.wait_job_done(created["job_id"], 90)
    # Consumers add their counts to the shared store once a second.
    page = wait_for(lambda: (p := panel(client)) is not None and stat(p, "sent-15m") == f"{job['sent']:,}" and p, 10)
    assert page.find("tr", data_job=str(created["job_id"])) is None  # done: no longer in progress
    failures = page.find("table", class_="failed")
    assert failures is not None
    [failure] = [r for r in failures.find_all("tr") if refused in r.text]
    assert "550 5.1.1" in failure.text and "Recipient address rejected" in failure.text
    assert "failed" in failure.text

    chart = page.find("svg", id="throughput")
    drawn = {kind: sum(int(bar.attrs["data-count"]) for bar in chart.find_all("rect", class_=kind))
             for kind in ("sent", "failed")}
    assert drawn == {"sent": job["sent"], "failed": 1}
    assert stat(page, "sent-15m") == f"{job['sent']:,}"
    assert stat(page, "sent-1m") == f"{job['sent']:,}"


def test_the_dashboard_warns_when_redis_evicts_keys(make_school, redis_server):
    school = make_school(redis=redis_server)
    client = school.admin().client
    redis_server.client().config_set("maxmemory-policy", "volatile-lru")
    warnings = [w.text for w in panel(client).find_all("p", data_warning="redis")]
    assert any("maxmemory-policy is volatile-lru" in w for w in warnings), warnings


def test_the_dashboard_still_shows_when_redis_is_down(make_school, redis_server):
    school = make_school(redis=redis_server)
    client = school.admin().client
    redis_server.stop()
    page = panel(client)
    alerts = [p.text for p in page.find_all("p", role="alert")]
    assert any("Cannot read the queue" in a for a in alerts), alerts
    assert stat(page, "waiting") == "?"


def test_the_chart_scales_bars_to_the_busiest_interval():
    from school.ops.chart import throughput_chart
    from school.ops.stats import Throughput

    chart = throughput_chart(Throughput(starts=[0, 10, 20, 30], sent=[0, 5, 10, 2], failed=[0, 0, 0, 3], step=10))
    heights = {(bar.kind, bar.count): bar.height for bar in chart.bars}
    full = chart.plot_bottom - chart.plot_top
    assert heights[("sent", 10)] == full  # the peak, 10, is already a round number
    assert heights[("sent", 5)] == full / 2
    assert heights[("failed", 3)] == pytest.approx(full * 3 / 10, abs=0.1)
    assert [t.label for t in chart.y_ticks] == ["0", "5", "10"]
    assert chart.sent == 17 and chart.failed == 3


def test_the_dashboard_updates_itself_in_the_browser(make_school, consumer, live_server, chromium):
    school = make_school()
    server = live_server(school.app)
    page = chromium.new_page()
    watch = Watch().attach(page)
    log_in(page, server.url)
    page.goto(server.url + "/admin/queue")
    page.evaluate("window.loadedOnce = true")  # a reload would lose it

    worker = consumer(school, workers=2, HEARTBEAT_INTERVAL=1)
    page.wait_for_selector(f'tr[data-consumer$=":{worker.pid}"][data-state="alive"]', timeout=15_000)
    worker.kill()
    page.wait_for_selector(f'tr[data-consumer$=":{worker.pid}"][data-state="gone"]', timeout=10_000)
    assert page.evaluate("window.loadedOnce") is True
    assert watch.csp_violations == []
