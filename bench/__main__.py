"""``python -m bench``: every benchmark, sharing one seeded school, then a summary table.

Runs the benchmarks in an order that lets them share fan-out runs: the sweep of worker threads
and the 100,000-recipient runs of benchmark 3 serve benchmarks 4 and 5 too.
"""
import sys
import time

from . import (
    create_latency,
    create_under_load,
    embedded,
    fanout_throughput,
    ledger,
    memory,
    progress_polling,
    remote_server,
    roster_import,
    scaling,
    urgent_first,
)
from .report import Report, parse_args
from .stack import Stack


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(__doc__, argv, sweep=True)
    report = Report("bench", argv, record=not args.no_record)
    started = time.monotonic()
    with Stack(args.students, threads=args.threads or 8) as stack:
        report.header([stack.server_version(), "SQLite"])
        create_latency.run(stack, report)
        fanout_throughput.run(stack, report, args.threads)
        scaling.run(stack, report)
        memory.run(stack, report)
        create_under_load.run(stack, report)
        progress_polling.run(stack, report)
        remote_server.run(stack, report)
        ledger.run(stack, report)
        threads = stack.threads
    embedded.run(report, threads, students=max(1, args.students // 5))
    roster_import.run(report, args.students)
    urgent_first.run(report)
    report.summary()
    print(f"\nbench finished in {(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
