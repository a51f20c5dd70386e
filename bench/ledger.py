"""9. The family side on the large job (100,000 recipients at the default size): the recipient
ledger (a search by name or email, a status filter, through the API an admin's token reaches) and
a family's page from its personal link.

Targets (p50): ledger search and filter under 100 ms, the family page under 50 ms.
"""
from itsdangerous import URLSafeSerializer

from school.family.tokens import SALT

from .report import Figure, Report, ms, table
from .stack import Stack, percentile, run_alone

ROUNDS = 50
TARGETS = {"search": 0.100, "filter": 0.100, "family": 0.050}


def run(stack: Stack, report: Report) -> list[Figure]:
    done = stack.fanout("large", 2, stack.threads)
    (job_id,) = stack.sql("SELECT id FROM notification_jobs WHERE event_id = %s", (done.event_id,))[0]
    people = stack.sql("SELECT id, email, name FROM notifications WHERE job_id = %s ORDER BY id LIMIT %s",
                       (job_id, ROUNDS))
    sign = URLSafeSerializer(stack.env()["SECRET_KEY"], salt=SALT).dumps
    api, family = stack.client(), stack.client(token=False)
    timings = {"search": [], "filter": [], "family": []}
    try:
        for index, (notification_id, email, name) in enumerate(people):
            requests = (
                ("search", api, f"/api/jobs/{job_id}/recipients?q={email.split('@')[0]}", b'"total"'),
                ("filter", api, f"/api/jobs/{job_id}/recipients?status=sent&page={index + 1}", b'"total"'),
                ("family", family, f"/n/{sign([job_id, notification_id])}", b"I've read this"),
            )
            for kind, client, path, expected in requests:
                status, body, seconds = client.request("GET", path)
                if status != 200 or expected not in body:
                    raise RuntimeError(f"GET {path} answered {status}")
                timings[kind].append(seconds)
    finally:
        api.close()
        family.close()
    names = {"search": "`GET /api/jobs/<id>/recipients?q=<part of an address>`",
             "filter": "`GET /api/jobs/<id>/recipients?status=sent&page=N`",
             "family": "`GET /n/<token>` (the family's page, no session)"}
    rows = [[names[kind], len(values), *(ms(percentile(values, p)) for p in (50, 95, 99)),
             ms(TARGETS[kind])] for kind, values in timings.items()]
    lines = [f"On the {done.recipients:,}-recipient job just sent, {ROUNDS} rounds, one request of each kind "
             "at a time.", "", *table(["Request", "Requests", "p50", "p95", "p99", "target p50"], rows)]
    figures = [Figure("9. Family side", f"p50 {kind}", ms(percentile(values, 50)), f"< {ms(TARGETS[kind])}",
                      percentile(values, 50) < TARGETS[kind]) for kind, values in timings.items()]
    report.section(f"9. The recipient ledger and the family page on a {done.recipients:,}-recipient job", lines,
                   figures)
    return figures


def main(argv=None) -> None:
    run_alone("bench.ledger", __doc__, run, argv)


if __name__ == "__main__":
    main()
