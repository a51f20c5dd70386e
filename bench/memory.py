"""5. Memory: the peak resident memory of a consumer process sending to about 10,000 and to
about 100,000 recipients (VmHWM from /proc, read just before the consumer stops)."""

from .report import Figure, Report, table
from .stack import Stack, run_alone

TARGET = 1.2
CONSUMERS = 2


def run(stack: Stack, report: Report, threads: int | None = None) -> list[Figure]:
    threads = threads or stack.threads
    runs = [stack.fanout(audience, CONSUMERS, threads) for audience in ("tenth", "large")]
    small, large = runs
    ratio = max(large.peak_rss_kb) / max(small.peak_rss_kb)
    lines = [
        f"Peak resident memory (VmHWM) of each of the {CONSUMERS} consumers "
        f"(`{stack.consumer_command(CONSUMERS, threads)}`), each run with freshly started consumers.", "",
        *table(["Recipients", "Peak RSS per consumer", "Time"],
               [[f"{run.recipients:,}", " / ".join(f"{kb / 1024:.0f} MiB" for kb in run.peak_rss_kb),
                 f"{run.seconds:.1f} s"] for run in runs]), "",
        f"Largest peak, {large.recipients:,} / {small.recipients:,} recipients: **{ratio:.2f}** (target ≤ {TARGET}).",
    ]
    figures = [
        Figure("5. Memory", "peak RSS of a consumer, ~10k / ~100k recipients",
               f"{max(small.peak_rss_kb) / 1024:.0f} / {max(large.peak_rss_kb) / 1024:.0f} MiB"),
        Figure("5. Memory", "~100k / ~10k", f"{ratio:.2f}", f"≤ {TARGET}", ratio <= TARGET),
    ]
    report.section("5. Consumer memory", lines, figures)
    return figures


def main(argv=None) -> None:
    run_alone("bench.memory", __doc__, run, argv)


if __name__ == "__main__":
    main()
