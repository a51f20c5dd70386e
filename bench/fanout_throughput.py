"""3. Fan-out throughput: about 100,000 recipients on PostgreSQL + Redis, rate limit off, into
smtp-sink, with 2 consumer processes; and, in the same run, the ceiling: plain smtplib sending as
many copies of one already-rendered notification to the same smtp-sink from 2 processes."""

from . import ceiling
from .report import Figure, Report, table
from .stack import Stack, run_alone

TARGET = 0.6
# The issue's own reading of that target on a 2-core machine: about 1,400/s, 100,000 in about 70 s.
EXPECTED_RATE = 1_400
SWEEP = (4, 8, 16)
CONSUMERS = 2
SEED_RATE = "55–83/s"  # what the system this one replaces reports (10,000 in 2-3 min)


def pick_threads(stack: Stack, report: Report, candidates=SWEEP) -> int:
    """Worker threads per consumer: the fastest of a short sweep on about 10,000 recipients."""
    runs = [stack.fanout("tenth", CONSUMERS, threads) for threads in candidates]
    best = max(runs, key=lambda run: run.rate)
    stack.threads = best.threads
    rows = [[f"{CONSUMERS} × `-w {run.threads}`", f"{run.recipients:,}", f"{run.seconds:.1f} s",
             f"{run.rate:,.0f}/s", "← chosen" if run is best else ""] for run in runs]
    report.section("3a. Worker threads per consumer", [
        f"A short sweep on {best.recipients:,} recipients (2 consumers); the fastest is used from here on.", "",
        *table(["Consumers", "Recipients", "Time", "Emails/s", ""], rows)], [
        Figure("3. Fan-out throughput", "worker threads per consumer (best of a sweep)", str(best.threads))])
    return best.threads


def run(stack: Stack, report: Report, threads: int | None = None) -> list[Figure]:
    if threads is None and "threads-picked" not in stack.memo:
        threads = pick_threads(stack, report)
        stack.memo["threads-picked"] = threads
    threads = threads or stack.threads
    ours = stack.fanout("large", CONSUMERS, threads)
    message = stack.probe("message", str(ours.event_id))
    stack.say(f"ceiling: smtplib sends {ours.recipients:,} copies of a {len(message):,}-byte message from 2 processes")
    seconds, ceiling_rate = ceiling.smtplib_rate(stack.smtp_port, message, ours.recipients, processes=CONSUMERS)
    ratio = ours.rate / ceiling_rate
    lines = [
        f"One event for {ours.recipients:,} recipients (every guardian and teacher), created with "
        f"`POST /api/events`, timed until the job is `done` with every row `sent` (checked in SQL). "
        f"`{stack.consumer_command(CONSUMERS, threads)}`, MAIL_RATE_LIMIT=0, NOTIFY_BATCH_SIZE=100 (the "
        f"default), smtp-sink on loopback. The ceiling: plain `smtplib`, {CONSUMERS} processes, one reused "
        f"connection each, sending {ours.recipients:,} copies of one notification as the app renders it "
        f"({len(message):,} bytes) to the same smtp-sink, right after.", "",
        *table(["", "Recipients", "Time", "Emails/s"], [
            ["This app", f"{ours.recipients:,}", f"{ours.seconds:.1f} s", f"{ours.rate:,.0f}/s"],
            ["Ceiling (plain smtplib)", f"{ours.recipients:,}", f"{seconds:.1f} s", f"{ceiling_rate:,.0f}/s"],
        ]), "",
        f"All rows written by the fan-out after {ours.fanout_seconds:.1f} s. "
        f"This app / ceiling: **{ratio:.2f}** (target ≥ {TARGET}). The system this one replaces reports "
        f"{SEED_RATE}.",
    ]
    figures = [
        Figure("3. Fan-out throughput", f"{ours.recipients:,} recipients, {CONSUMERS} consumers",
               f"{ours.rate:,.0f} emails/s ({ours.seconds:.0f} s)"),
        Figure("3. Fan-out throughput", "ceiling: plain smtplib, 2 processes", f"{ceiling_rate:,.0f} emails/s"),
        Figure("3. Fan-out throughput", "this app / ceiling", f"{ratio:.2f}", f"≥ {TARGET}", ratio >= TARGET),
        Figure("3. Fan-out throughput", "emails/s against the issue's reading of the target",
               f"{ours.rate:,.0f}/s", f"≥ {EXPECTED_RATE:,}/s (100,000 in ~70 s)", ours.rate >= EXPECTED_RATE),
    ]
    report.section("3. Fan-out throughput", lines, figures)
    return figures


def main(argv=None) -> None:
    run_alone("bench.fanout_throughput", __doc__, run, argv, sweep=True)


if __name__ == "__main__":
    main()
