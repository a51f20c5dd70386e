"""10. Urgent first: at MAIL_RATE_LIMIT=200/second, an urgent notice for grade 7's guardians sent
alone, then again while a whole-school normal notice is under way, on a school of 8,000 students
(PostgreSQL + Redis, 2 consumers of 8 threads). Its first email's latency (target under 1 s) and
its last email's time against the same notice alone (target under 1.5 ×); the normal notice's
emails/s before, during and after the urgent one."""
import sys
import time

from .report import Figure, Report, parse_args, table
from .stack import Stack, event_payload

STUDENTS = 8_000
RATE = 200  # messages a second
CONSUMERS, THREADS = 2, 8
GRADE_SEVEN_GUARDIANS = {"roles": ["guardians"], "grades": [7], "classes": []}
UNDER_WAY = 2_000  # normal emails sent before the urgent notice is created
AFTER = 10.0  # seconds the normal notice is watched once the urgent one is done


def create(stack: Stack, client, audience: dict, priority: str, title: str) -> tuple[int, float]:
    """The job's id and the wall-clock time just before the request."""
    payload = {**event_payload(audience, title), "priority": priority}
    started = time.time()
    status, body, _ = client.post_json("/api/events", payload)
    if status != 202:
        raise RuntimeError(f"POST /api/events answered {status}: {body}")
    return body["job_id"], started


def sent_times(stack: Stack, job_id: int) -> list[float]:
    """When each sent row got its final reply (the consumers' clock: the same machine's)."""
    rows = stack.sql("SELECT EXTRACT(EPOCH FROM sent_at) FROM notifications WHERE job_id = %s AND status = 'sent' "
                     "ORDER BY sent_at", (job_id,))
    return [float(row[0]) for row in rows]


def wait_sent(stack: Stack, job_id: int, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while stack.sent_count(job_id) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id}: fewer than {count} sent after {timeout:.0f} s")
        time.sleep(0.2)


def urgent_run(stack: Stack, with_normal: bool) -> dict:
    """Send the urgent notice (while a whole-school normal one is under way, if ``with_normal``)."""
    stack.cancel_open_jobs()
    stack.clear_runs()
    consumers = stack.start_consumers(CONSUMERS, THREADS)
    client = stack.client()
    result = {}
    try:
        # Both runs start from warm consumers (connections open, code loaded): ten emails first.
        warm_up, _ = create(stack, client, stack.audiences["ten"], "normal", "Warm-up")
        stack.wait_done(warm_up, time.perf_counter(), 120, consumers)
        if with_normal:
            normal_id, _ = create(stack, client, stack.audiences["school"], "normal", "Term dates")
            wait_sent(stack, normal_id, UNDER_WAY, 120)
        urgent_id, started = create(stack, client, GRADE_SEVEN_GUARDIANS, "urgent", "Burst pipe: grade 7 closed")
        stack.wait_done(urgent_id, time.perf_counter(), 300, consumers)
        urgent = sent_times(stack, urgent_id)
        result.update(recipients=len(urgent), first=urgent[0] - started, last=urgent[-1] - started)
        if with_normal:
            time.sleep(AFTER)
            normal = sent_times(stack, normal_id)
            client.post_json(f"/api/jobs/{normal_id}/cancel", {})
            before = [t for t in normal if started - AFTER <= t < started]
            during = [t for t in normal if urgent[0] <= t <= urgent[-1]]
            after = [t for t in normal if urgent[-1] < t <= urgent[-1] + AFTER]
            result.update(normal_total=stack.job_state(normal_id)[1], normal_before=len(before) / AFTER,
                          normal_during=len(during), normal_after=len(after) / AFTER,
                          normal_resumed=(after[0] - urgent[-1]) if after else float("nan"))
    finally:
        client.close()
        stack.stop_consumers(consumers)
    return result


def run(report: Report, students: int = STUDENTS) -> list[Figure]:
    stack = Stack(students, threads=THREADS)
    stack.overrides = {"MAIL_RATE_LIMIT": f"{RATE}/second"}  # the web app's too: it announces urgent jobs
    with stack:
        report.header([stack.server_version()])
        stack.say("urgent notice alone")
        alone = urgent_run(stack, with_normal=False)
        stack.say(f"  {alone}")
        stack.say("urgent notice while the whole school's normal notice is sent")
        busy = urgent_run(stack, with_normal=True)
        stack.say(f"  {busy}")
        database, command = stack.server_version(), stack.consumer_command(CONSUMERS, THREADS)
    ratio = busy["last"] / alone["last"]
    lines = [
        f"A school of {students:,} students ({database}, Redis), `{command}`, MAIL_RATE_LIMIT={RATE}/second, "
        f"smtp-sink. An urgent notice for grade 7's guardians ({alone['recipients']:,} emails), first alone, then "
        f"created once the whole school's normal notice ({busy['normal_total']:,} emails) had sent "
        f"{UNDER_WAY:,}. Each run on fresh consumers, warmed by a notice to ten people. Times from "
        f"`POST /api/events` to each email's final reply (the ledger's `sent_at`).", "",
        *table(["Urgent notice", "Emails", "First email", "Last email"],
               [["alone", f"{alone['recipients']:,}", f"{alone['first']:.2f} s", f"{alone['last']:.2f} s"],
                ["while the normal notice sends", f"{busy['recipients']:,}", f"{busy['first']:.2f} s",
                 f"{busy['last']:.2f} s ({ratio:.2f} × alone)"]]),
        "",
        f"The normal notice: {busy['normal_before']:.0f} emails/s in the {AFTER:.0f} s before the urgent one, "
        f"{busy['normal_during']} emails between the urgent notice's first and last, "
        f"{busy['normal_after']:.0f} emails/s in the {AFTER:.0f} s after it (the first "
        f"{busy['normal_resumed']:.2f} s after the urgent notice's last email).",
    ]
    figures = [
        Figure("10. Urgent first", "urgent first email, normal notice sending", f"{busy['first']:.2f} s", "< 1 s",
               busy["first"] < 1.0),
        Figure("10. Urgent first", "urgent last email vs alone", f"{ratio:.2f} ×", "< 1.5 ×", ratio < 1.5),
    ]
    report.section("10. Urgent first: an urgent notice while the whole school's is sent", lines, figures)
    return figures


def main(argv=None) -> None:
    args = parse_args(__doc__, argv, students=STUDENTS)
    report = Report("bench.urgent_first", sys.argv[1:] if argv is None else argv, record=not args.no_record)
    run(report, students=args.students)
    report.summary()


if __name__ == "__main__":
    main()
