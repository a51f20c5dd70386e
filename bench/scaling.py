"""4. Scaling: the 100,000-recipient fan-out with 1 and with 2 consumer processes."""
import os

from .report import Figure, Report, table
from .stack import Stack, run_alone


def run(stack: Stack, report: Report, threads: int | None = None) -> list[Figure]:
    threads = threads or stack.threads
    runs = [stack.fanout("large", consumers, threads) for consumers in (1, 2)]
    one, two = runs
    ratio = two.rate / one.rate
    lines = [
        f"The fan-out of benchmark 3 ({two.recipients:,} recipients, PostgreSQL + Redis, smtp-sink) with "
        f"`{stack.consumer_command(1, threads)}` and `{stack.consumer_command(2, threads)}`, on this "
        f"{os.cpu_count()}-core machine that also runs PostgreSQL, Redis, smtp-sink and gunicorn.", "",
        *table(["Consumers", "Time", "Emails/s", "Fan-out written after"],
               [[run.consumers, f"{run.seconds:.1f} s", f"{run.rate:,.0f}/s", f"{run.fanout_seconds:.1f} s"]
                for run in runs]), "",
        f"2 consumers / 1 consumer: **{ratio:.2f}**.",
    ]
    figures = [
        Figure("4. Scaling", "1 consumer / 2 consumers", f"{one.rate:,.0f} / {two.rate:,.0f} emails/s"),
        Figure("4. Scaling", "2 consumers / 1 consumer", f"{ratio:.2f}"),
    ]
    report.section("4. Scaling with consumer processes", lines, figures)
    return figures


def main(argv=None) -> None:
    run_alone("bench.scaling", __doc__, run, argv)


if __name__ == "__main__":
    main()
