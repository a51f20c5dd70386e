"""9. The family side on the large job (100,000 recipients at the default size): the recipient
ledger (a search by name or email, a status filter, through the API an admin's token reaches), a
family's page from its personal link, and the ledger's CSV export of every recipient.

Targets (p50): ledger search and filter under 100 ms, the family page under 50 ms; the export in
flat memory (the serving worker's peak grows by less than EXPORT_GROWTH_MIB).
"""
from pathlib import Path

from itsdangerous import URLSafeSerializer

from school.family.tokens import SALT

from .report import Figure, Report, ms, table
from .stack import USER_EMAIL, USER_PASSWORD, Stack, percentile, run_alone

ROUNDS = 50
TARGETS = {"search": 0.100, "filter": 0.100, "family": 0.050}
EXPORT_GROWTH_MIB = 32  # far below what 100,000 rows held at once would take


def _worker_peaks(master: int) -> dict[int, int]:
    """Each gunicorn worker's peak resident memory (VmHWM), in kB."""
    peaks = {}
    for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split():
        status = Path(f"/proc/{pid}/status").read_text()
        peaks[int(pid)] = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    return peaks


def _export(stack: Stack, job_id: int) -> tuple[int, float, float]:
    """Rows, seconds, and the largest growth of a worker's peak memory (MiB) for one full CSV export."""
    browser = stack.client(token=False)
    try:
        browser.log_in(USER_EMAIL, USER_PASSWORD)
        before = _worker_peaks(stack.gunicorn.pid)
        status, body, seconds = browser.request("GET", f"/jobs/{job_id}/recipients.csv")
        after = _worker_peaks(stack.gunicorn.pid)
    finally:
        browser.close()
    if status != 200:
        raise RuntimeError(f"the CSV export answered {status}")
    growth = max(after[pid] - before.get(pid, after[pid]) for pid in after) / 1024
    return body.count(b"\n") - 1, seconds, growth


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
    exported, export_s, growth = _export(stack, job_id)
    names = {"search": "`GET /api/jobs/<id>/recipients?q=<part of an address>`",
             "filter": "`GET /api/jobs/<id>/recipients?status=sent&page=N`",
             "family": "`GET /n/<token>` (the family's page, no session)"}
    rows = [[names[kind], len(values), *(ms(percentile(values, p)) for p in (50, 95, 99)),
             ms(TARGETS[kind])] for kind, values in timings.items()]
    lines = [f"On the {done.recipients:,}-recipient job just sent, {ROUNDS} rounds, one request of each kind "
             "at a time.", "", *table(["Request", "Requests", "p50", "p95", "p99", "target p50"], rows), "",
             f"CSV export (`GET /jobs/<id>/recipients.csv`, an admin's session): {exported:,} rows in "
             f"{export_s:.1f} s; the serving worker's peak memory grew by {growth:.1f} MiB "
             f"(target: under {EXPORT_GROWTH_MIB} MiB, flat)."]
    figures = [Figure("9. Family side", f"p50 {kind}", ms(percentile(values, 50)), f"< {ms(TARGETS[kind])}",
                      percentile(values, 50) < TARGETS[kind]) for kind, values in timings.items()]
    figures.append(Figure("9. Family side", "CSV export, worker peak growth", f"{growth:.1f} MiB",
                          f"< {EXPORT_GROWTH_MIB} MiB", growth < EXPORT_GROWTH_MIB and exported == done.recipients))
    report.section(f"9. The recipient ledger and the family page on a {done.recipients:,}-recipient job", lines,
                   figures)
    return figures


def main(argv=None) -> None:
    run_alone("bench.ledger", __doc__, run, argv)


if __name__ == "__main__":
    main()
