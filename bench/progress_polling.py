"""7. Progress polling: latency of GET /api/jobs/<id> and of the progress fragment the job page
polls every second, while a 100,000-recipient job is being sent (see ``bench.under_load``)."""

from .report import Figure, Report, ms, table
from .stack import Stack, percentile, run_alone
from .under_load import measure


def run(stack: Stack, report: Report) -> list[Figure]:
    measured = measure(stack)
    timings, load = measured["timings"], measured["run"]
    kinds = (("`GET /api/jobs/<id>` (bearer token)", timings["api"]),
             ("`GET /jobs/<id>/progress?controls=1` (session, htmx)", timings["fragment"]))
    rows = [[name, len(values), *(ms(percentile(values, p)) for p in (50, 95, 99))] for name, values in kinds]
    lines = [
        f"While `{stack.consumer_command(2, load.threads)}` sent {load.recipients:,} emails; each poll reads the "
        f"job's kept counters (a sum over its batches), never its recipients' rows.", "",
        *table(["Request", "Requests", "p50", "p95", "p99"], rows),
    ]
    figures = [Figure("7. Progress polling", "p50: API / fragment",
                      f"{ms(percentile(timings['api'], 50))} / {ms(percentile(timings['fragment'], 50))}")]
    report.section("7. Progress polling while 100,000 emails are sent", lines, figures)
    return figures


def main(argv=None) -> None:
    run_alone("bench.progress_polling", __doc__, run, argv)


if __name__ == "__main__":
    main()
