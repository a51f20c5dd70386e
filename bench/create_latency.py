"""1. Create latency vs audience: 200 ``POST /api/events`` for ten people and 200 for the whole
school, through gunicorn, with no consumer running (the queue only receives the fan-out tasks)."""

from .report import Figure, Report, ms, table
from .stack import Stack, percentile, run_alone

REQUESTS = 200
WARM_UP = 10
TARGET = 1.2


def latencies(stack: Stack, audience: str, count: int, client) -> list[float]:
    return [stack.create_event(client, audience, title=f"Bench create {audience}")[1] for _ in range(count)]


def run(stack: Stack, report: Report, requests: int = REQUESTS) -> list[Figure]:
    stack.say(f"create latency: {requests} events for ten people and {requests} for the whole school")
    client = stack.client()
    try:
        for audience in ("ten", "school"):
            latencies(stack, audience, WARM_UP, client)
        # Interleaved, so whatever else the machine does weighs on both alike.
        timings = {"ten": [], "school": []}
        for _ in range(requests):
            for audience in timings:
                timings[audience] += latencies(stack, audience, 1, client)
    finally:
        client.close()
        stack.cancel_open_jobs()  # never to be sent: the whole school, 200 times over
        stack.flush_queue()
    sizes = {"ten": stack.count_audience("ten"), "school": stack.count_audience("school")}
    rows, p50 = [], {}
    for audience, values in timings.items():
        p50[audience] = percentile(values, 50)
        rows.append([f"{sizes[audience]:,} recipients", len(values), ms(p50[audience]), ms(percentile(values, 95)),
                     ms(percentile(values, 99)), ms(percentile(values, 100))])
    ratio = p50["school"] / p50["ten"]
    ratio95 = percentile(timings["school"], 95) / percentile(timings["ten"], 95)
    lines = [f"`POST /api/events` through `{stack.gunicorn_command}`, sequential requests over one keep-alive "
             f"client, interleaved; {WARM_UP} warm-up requests each not counted. No consumer was running.", "",
             *table(["Audience", "Requests", "p50", "p95", "p99", "max"], rows), "",
             f"Whole school / ten people: **{ratio:.2f}** at p50, {ratio95:.2f} at p95 (target ≤ {TARGET})."]
    figures = [
        Figure("1. Create latency", "p50 / p95 / p99, ten people",
               " / ".join(ms(percentile(timings["ten"], p)) for p in (50, 95, 99))),
        Figure("1. Create latency", "p50 / p95 / p99, whole school",
               " / ".join(ms(percentile(timings["school"], p)) for p in (50, 95, 99))),
        Figure("1. Create latency", "whole school / ten people (p50)", f"{ratio:.2f}", f"≤ {TARGET}",
               ratio <= TARGET),
    ]
    report.section("1. Create latency vs audience", lines, figures)
    return figures


def main(argv=None) -> None:
    run_alone("bench.create_latency", __doc__, run, argv)


if __name__ == "__main__":
    main()
