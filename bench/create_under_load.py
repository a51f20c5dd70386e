"""2. Create latency under load: POST /api/events while a 100,000-recipient job is being sent on
the same machine (see ``bench.under_load``)."""

from .report import Figure, Report, ms, table
from .stack import Stack, percentile, run_alone
from .under_load import measure


def run(stack: Stack, report: Report) -> list[Figure]:
    measured = measure(stack)
    timings, load = measured["timings"], measured["run"]
    rows = [[f"{stack.count_audience(audience):,} recipients", len(values),
             *(ms(percentile(values, p)) for p in (50, 95, 99)), ms(percentile(values, 100))]
            for audience, values in (("ten", timings["create ten"]), ("school", timings["create school"]))]
    lines = [
        f"`POST /api/events` through `{stack.gunicorn_command}` while "
        f"`{stack.consumer_command(2, load.threads)}` sent {load.recipients:,} emails "
        f"({load.rate:,.0f}/s over the whole job, slowed by these requests). Each whole-school event was canceled "
        f"through the API right after its creation, so its fan-out did not add to the load; the events for ten "
        f"people were sent. Requests in {load.extra['seconds']:.0f} s of the job.", "",
        *table(["Audience", "Requests", "p50", "p95", "p99", "max"], rows),
    ]
    everything = timings["create ten"] + timings["create school"]
    figures = [Figure("2. Create latency under load", "p50 / p95 / p99, both audiences",
                      " / ".join(ms(percentile(everything, p)) for p in (50, 95, 99)))]
    report.section("2. Create latency while 100,000 emails are sent", lines, figures)
    return figures


def main(argv=None) -> None:
    run_alone("bench.create_under_load", __doc__, run, argv)


if __name__ == "__main__":
    main()
