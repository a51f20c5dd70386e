"""The 100,000-recipient job with requests beside it, as benchmarks 2 and 7 measure it.

While 2 consumers send the job, one loop (pausing 0.1 s between rounds) creates an event for ten
people and one for the whole school (canceled at once, so its fan-out does not join the load),
asks the API for the big job's progress, and polls its progress fragment with a logged-in session
as the page's htmx does.
"""
import time

from .stack import USER_EMAIL, USER_PASSWORD, Stack

ROUNDS = 200
PAUSE = 0.1
CONSUMERS = 2


def measure(stack: Stack) -> dict:
    """Latencies in seconds by request kind, and the run they were taken beside (memoised)."""
    if "under-load" in stack.memo:
        return stack.memo["under-load"]
    api, browser = stack.client(), stack.client(token=False)
    browser.log_in(USER_EMAIL, USER_PASSWORD)
    timings = {"create ten": [], "create school": [], "api": [], "fragment": []}

    def during(job_id: int) -> dict:
        deadline = time.monotonic() + 2
        while stack.sent_count(job_id) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # until the sending is under way
        started = time.perf_counter()
        for _ in range(ROUNDS):
            if stack.job_state(job_id)[0] != "running":
                break
            timings["create ten"].append(stack.create_event(api, "ten", "Bench under load")[1])
            school_job, seconds = stack.create_event(api, "school", "Bench under load")
            timings["create school"].append(seconds)
            status, body, _ = api.post_json(f"/api/jobs/{school_job}/cancel", {})
            if status != 200:
                raise RuntimeError(f"cancel answered {status}: {body}")
            status, body, seconds = api.get_json(f"/api/jobs/{job_id}")
            if status != 200 or body.get("id") != job_id:
                raise RuntimeError(f"GET /api/jobs/{job_id} answered {status}: {body}")
            timings["api"].append(seconds)
            status, page, seconds = browser.request("GET", f"/jobs/{job_id}/progress?controls=1",
                                                    headers={"HX-Request": "true"})
            if status not in (200, 286) or b'role="progressbar"' not in page:
                raise RuntimeError(f"the progress fragment answered {status}")
            timings["fragment"].append(seconds)
            time.sleep(PAUSE)
        return {"seconds": time.perf_counter() - started, "sent_at_end": stack.sent_count(job_id)}

    try:
        run = stack.fanout("large", CONSUMERS, stack.threads, during=during)
    finally:
        api.close()
        browser.close()
    stack.memo["under-load"] = {"timings": timings, "run": run}
    return stack.memo["under-load"]
