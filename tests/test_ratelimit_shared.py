"""The rate limit is one limit for every process, with Redis and without it (a file under DATA_DIR),
and it follows the mail server: a throttling reply halves the pace every consumer uses, good replies
bring it back, and even very low rates ("6/minute") pace one message at a time.

The processes are real: consumers, or small Python processes holding a ``MailRateLimit`` of their own,
as each consumer does."""
import json
import subprocess
import sys
import threading
import time

import pytest

from school.notify.ratelimit import FLOOR, URGENT_LEASE, MailRateLimit
from tests.support.host import ROOT, wait_for



# --- one limit object per process, as in each consumer ------------------------------------------

PROCESS = """
import json, sys, time
from school.notify.ratelimit import MailRateLimit
spec, redis_url, data_dir, action, count = sys.argv[1:]
limit = MailRateLimit(spec, redis_url or None, "school", 30.0, data_dir or None)
granted = []
for _ in range(int(count)):
    if action == "acquire":
        limit.acquire().done()
        granted.append(time.time())
    elif action == "try":  # a normal message that may have to give way: granted or not
        permit = limit.acquire()
        granted.append(permit is not None and time.time())
        permit and permit.done()
    elif action == "urgent":  # a sender of urgent job 1 that then dies, its demand never ended
        limit.acquire(urgent="job:1").done()
        granted.append(time.time())
    elif action == "urgent-until-killed":  # sends urgent messages, renewing its demand, until killed
        while True:
            limit.acquire(urgent="job:1").done()
    else:
        getattr(limit, action)()
print(json.dumps({"pace": limit.pace(), "granted": granted}))
"""


@pytest.fixture(params=["file", "redis"])
def shared(request, tmp_path):
    """``shared(spec)``: (a limit in this process, a function running an action in a new process),
    both on the same state: Redis, or DATA_DIR's file."""
    redis_url = request.getfixturevalue("redis_server").url if request.param == "redis" else ""
    data_dir = "" if redis_url else str(tmp_path)

    def make(spec: str):
        args = [sys.executable, "-c", PROCESS, spec, redis_url, data_dir]

        def in_process(action: str, count: int = 1) -> dict:
            done = subprocess.run([*args, action, str(count)], cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        # ``run.start(action)``: the same in a process left running.
        in_process.start = lambda action: subprocess.Popen([*args, action, "1"], cwd=ROOT,
                                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return MailRateLimit(spec, redis_url or None, "school", 30.0, data_dir or None), in_process

    return make


@pytest.mark.slow
def test_a_throttle_halves_the_pace_of_every_process_and_good_replies_restore_it(shared):
    here, run = shared("10/second")
    assert here.pace() == 10
    assert run("throttled")["pace"] == 5
    assert here.pace() == 5
    # The other process paces at the halved rate: six messages take at least a second, not half.
    granted = run("acquire", 6)["granted"]
    assert granted[-1] - granted[0] >= 0.99
    # Good replies lift it a little each, then all the way back to the limit, and no further.
    assert 5 < run("accepted", 20)["pace"] < 6
    assert 5 < here.pace() < 6
    assert run("accepted", 2000)["pace"] == 10
    assert here.pace() == 10


@pytest.mark.slow
def test_throttles_never_slow_below_one_a_minute(shared):
    here, run = shared("10/minute")
    for _ in range(5):  # 10 → 5 → 2.5 → 1.25 → 1 → 1 a minute
        run("throttled")
        time.sleep(1.1)  # past the hold, so each is a new signal
    assert here.pace() == pytest.approx(FLOOR)
    assert run("accepted", 1)["pace"] > FLOOR


@pytest.mark.slow
def test_an_unlimited_limit_starts_at_half_the_rate_seen_and_becomes_unlimited_again(shared):
    here, run = shared("0")
    assert here.pace() is None
    run("accepted", 300)  # good replies within the last ten seconds: 30 a second
    assert run("throttled")["pace"] == pytest.approx(15, rel=0.1)
    assert here.pace() == pytest.approx(15, rel=0.1)
    # An unlimited limit that was throttled paces every process until it has recovered.
    permits = run("acquire", 4)["granted"]
    assert permits[-1] - permits[0] >= 0.19
    assert run("accepted", 5000)["pace"] is None
    assert here.pace() is None


# --- very low rates ------------------------------------------------------------------------------

@pytest.mark.slow
def test_six_a_minute_hands_out_one_permit_every_ten_seconds_across_processes(shared):
    here, run = shared("6/minute")
    here.acquire().done()
    first = time.time()
    others = sorted(run("acquire")["granted"] + run("acquire")["granted"])
    assert others[0] - first >= 9.9
    assert others[1] - others[0] >= 9.9


@pytest.mark.slow
def test_a_consumer_at_six_a_minute_sends_one_message_every_ten_seconds(make_school, smtp_server, consumer):
    # seed_demo(12) has one student per grade: grades 7 to 9 are three addresses.
    school = make_school(students=12, smtp=smtp_server, MAIL_RATE_LIMIT="6/minute")
    consumer(school, workers=2)
    created = school.create_event({"roles": ["students"], "grades": [7, 8, 9], "classes": []})
    received = smtp_server.wait_for_count(3, timeout=90)
    job = school.wait_job_done(created["job_id"], timeout=30)
    assert (job["status"], job["sent"]) == ("done", 3)
    arrivals = sorted(m.at for m in received)
    assert len({m.rcpt for m in received}) == 3
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    print(f"\nRATE LIMIT 6/minute: arrivals {', '.join(f'{gap:.2f}' for gap in gaps)} s apart")
    assert min(gaps) >= 9


def test_a_sender_waiting_for_a_slow_slot_keeps_asking_whether_to_stop(shared):
    here, _run = shared("6/minute")
    here.acquire().done()  # the next slot is ten seconds away
    asked = []
    started = time.monotonic()
    assert here.acquire(should_stop=lambda: asked.append(time.monotonic()) or len(asked) >= 4) is None
    # It gave up on the fourth question, long before the slot: it did not sleep through the wait.
    assert time.monotonic() - started < 5


# --- urgent notices first ------------------------------------------------------------------------

@pytest.mark.slow
def test_normal_messages_give_way_to_urgent_ones_until_the_urgent_sender_dies(shared):
    here, run = shared("20/second")
    here.acquire().done()  # nothing urgent: a normal message goes
    assert len(run("urgent", 3)["granted"]) == 3  # an urgent sender in another process, which ends
    sender = run.start("urgent-until-killed")  # and one that keeps sending until it dies
    try:
        wait_for(here.urgent_held, 60, 0.05, "the other process's urgent demand is not seen here")
        assert here.acquire() is None  # a normal message gives way at once, without waiting for a slot
        assert here.give_way(0.3)  # and a normal batch about to start waits a little, then gives way too
        here.acquire(urgent="job:2").done()  # while another urgent job's messages still go
        here.urgent_ending("job:2")
    finally:
        sender.kill()  # kill -9: its demand is never ended
        sender.wait(10)
    # Nobody renews the dead sender's demand: it lapses, and normal messages go again.
    wait_for(here.acquire, URGENT_LEASE + 5, 0.1, "normal messages still give way to a dead urgent sender").done()
    assert not here.urgent_held() and not here.give_way(0.3)


@pytest.mark.slow
def test_an_urgent_job_announced_but_never_sent_holds_normal_messages_only_briefly(shared):
    here, run = shared("20/second")
    assert run("try")["granted"] != [False]
    # Dispatched by the web app, but no consumer takes it up. The announcement is repeated until
    # the other process has looked (starting it can take longer than a lease on a busy machine),
    # then left to lapse.
    announced = threading.Event()

    def announce():
        while not announced.is_set():
            here.hold_urgent("job:3")
            announced.wait(0.5)

    announcer = threading.Thread(target=announce, daemon=True)
    announcer.start()
    try:
        wait_for(here.urgent_held, 5, 0.05, "the announcement was not held")
        assert run("try")["granted"] == [False]  # every process's normal messages give way
    finally:
        announced.set()
        announcer.join()
    wait_for(lambda: run("try")["granted"] != [False], URGENT_LEASE + 10, 0.1, "the announcement did not lapse")


def test_an_unlimited_limit_keeps_no_urgent_demand(shared):
    here, _run = shared("0")
    here.hold_urgent("job:4")
    assert not here.urgent_held()
    assert here.acquire() is not None
