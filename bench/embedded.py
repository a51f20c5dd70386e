"""6. Embedded default: about 20,000 recipients on SQLite with the SQLite-backed Huey queue (no
PostgreSQL, no Redis), one consumer process."""
import sys

from .report import Figure, Report, parse_args, table
from .stack import Stack

STUDENTS = 20_000  # every guardian and teacher of this school: about 20,000 addresses
CONSUMERS = 1


def run(report: Report, threads: int = 8, students: int = STUDENTS) -> list[Figure]:
    with Stack(students, backend="sqlite", threads=threads) as stack:
        run_ = stack.fanout("large", CONSUMERS, threads)
        database, command = stack.server_version(), stack.consumer_command(CONSUMERS, threads)
    lines = [
        f"A school of {students:,} students on the embedded default (nothing but `DATA_DIR`: SQLite for the data "
        f"and for the queue), gunicorn, `{command}`, smtp-sink. "
        f"One event for every guardian and teacher, timed from `POST /api/events` until the job is `done` with "
        f"every row `sent`.", "",
        *table(["Database", "Recipients", "Time", "Emails/s", "Fan-out written after"],
               [[database, f"{run_.recipients:,}", f"{run_.seconds:.1f} s", f"{run_.rate:,.0f}/s",
                 f"{run_.fanout_seconds:.1f} s"]]),
    ]
    figures = [Figure("6. Embedded (SQLite)", f"{run_.recipients:,} recipients, 1 consumer",
                      f"{run_.rate:,.0f} emails/s ({run_.seconds:.0f} s)")]
    report.section("6. Embedded default: SQLite and the SQLite queue", lines, figures)
    return figures


def main(argv=None) -> None:
    args = parse_args(__doc__, argv, students=STUDENTS)
    report = Report("bench.embedded", sys.argv[1:] if argv is None else argv, record=not args.no_record)
    report.header(["SQLite"])
    run(report, args.threads or 8, students=args.students)
    report.summary()


if __name__ == "__main__":
    main()
