"""9. Across the internet: the mail server 10, 50 and 100 ms away behind a proxy that refuses
more than 20 connections (``bench.proxy``), MAIL_MAX_CONNECTIONS=20, 2 consumers with 10 worker
threads each (20 threads: as many as connections may be open). Messages/s against the issue's
target of 0.8 × cap / RTT, and whether the proxy ever had to refuse a connection."""
from .proxy import LatencyProxy
from .report import Figure, Report, table
from .stack import Stack, run_alone

CAP = 20
RTTS = (0.010, 0.050, 0.100)
CONSUMERS, THREADS = 2, 10
AUDIENCE = "tenth"


def run(stack: Stack, report: Report) -> list[Figure]:
    rows, figures = [], []
    for rtt in RTTS:
        proxy = LatencyProxy(stack.smtp_port, rtt, CAP).start()
        stack.overrides = {"MAIL_PORT": str(proxy.port), "MAIL_MAX_CONNECTIONS": str(CAP)}
        try:
            result = stack.fanout(AUDIENCE, CONSUMERS, THREADS, during=lambda _job: {})
        finally:
            stack.overrides = {}
            proxy.stop()
        target = 0.8 * CAP / rtt
        rows.append([f"{rtt * 1000:.0f} ms", f"{result.recipients:,}", f"{result.seconds:.1f} s",
                     f"{result.rate:,.0f}/s", f"{target:,.0f}/s", proxy.connections, proxy.most_open, proxy.refused])
        figures.append(Figure("9. Across the internet", f"RTT {rtt * 1000:.0f} ms, cap {CAP}",
                              f"{result.rate:,.0f} emails/s, {proxy.refused} refused", f"≥ {target:,.0f}/s, 0 refused",
                              result.rate >= target and proxy.refused == 0))
    lines = [
        f"One event for the '{AUDIENCE}' audience, `{stack.consumer_command(CONSUMERS, THREADS)}`, "
        f"MAIL_MAX_CONNECTIONS={CAP}, into smtp-sink behind `bench/proxy.py`: every chunk delayed by RTT/2 each "
        f"way, connections past {CAP} refused with `421 4.7.0`. Connections: opened through the proxy during "
        "the run; most open: the most at once.", "",
        *table(["RTT", "Recipients", "Time", "Emails/s", "Target (0.8 × cap / RTT)", "Connections", "Most open",
                "Refused"], rows),
    ]
    report.section("9. Across the internet", lines, figures)
    return figures


def main(argv=None) -> None:
    run_alone("bench.remote_server", __doc__, run, argv)


if __name__ == "__main__":
    main()
