"""Fan-out in many languages: benchmark 3's event (every guardian and teacher, 2 consumers,
rate limit off, smtp-sink) on a roster where every guardian speaks English, then on the same
roster with a third of the guardians speaking nine other languages (each batch then holds one
language and renders its bodies once per language). Target: within 10 % of the all-English rate."""

import tempfile
import time
from datetime import datetime, timezone
from types import SimpleNamespace

from school import config, create_app

from .report import Figure, Report, table
from .stack import Stack, run_alone

CONSUMERS = 2
TARGET = 0.9  # mixed / all English
OTHERS = ("es", "fr", "de", "pt-BR", "pl", "uk", "ar", "zh-Hans", "vi")
ALL_ENGLISH = "UPDATE guardians SET language = 'en'"
# Every third guardian, the nine other languages in turn (as a roster writes them: pt-BR, zh-Hans).
A_THIRD_OTHER = ("UPDATE guardians SET language = (%s::text[])[1 + (id / 3) %% 9] WHERE id %% 3 = 0")


def render_cost(languages=("en", "es", "ar", "zh_Hans"), batches: int = 30) -> dict[str, float]:
    """CPU milliseconds to render a batch of 100 messages (a new ``Letter`` each batch, as a
    consumer does), per language: what a language adds to sending, free of the machine's load."""
    from school.notify.letter import Letter

    event = SimpleNamespace(id=7, title="Parents' evening", priority="normal", location="Main hall",
                            description="Meet the teachers.\nRefreshments in the hall.", translations=None,
                            starts_at=datetime(2031, 3, 5, 18, tzinfo=timezone.utc), created_at=None,
                            ends_at=datetime(2031, 3, 5, 20, tzinfo=timezone.utc), rsvp=False)
    app = create_app(config.load({"DATA_DIR": tempfile.mkdtemp(prefix="school-bench-")}) | {"TESTING": True})
    costs = {}
    with app.app_context():
        def batch(language):
            letter = Letter(event, 3)
            for i in range(100):
                letter.render(SimpleNamespace(id=i, email=f"g{i}@example.org", name=f"Guardian {i}",
                                              children="Ana Silva, Ben Silva" if i % 2 else "", language=language))
        for language in languages:
            batch(language)  # the catalog and the templates loaded
            started = time.process_time()
            for _ in range(batches):
                batch(language)
            costs[language] = (time.process_time() - started) / batches * 1000
    return costs


def run(stack: Stack, report: Report, threads: int | None = None, rounds: int = 3) -> list[Figure]:
    threads = threads or stack.threads
    rates: dict[str, list[float]] = {"english": [], "mixed": []}
    recipients = 0
    for _ in range(rounds):  # alternated, so a drift in the machine's load hits both alike
        for roster, statement, params in (("english", ALL_ENGLISH, ()), ("mixed", A_THIRD_OTHER, (list(OTHERS),))):
            stack.sql(ALL_ENGLISH)
            if roster == "mixed":
                stack.sql(statement, params)
            stack.runs.clear()  # a new run each time, not the remembered one
            done = stack.fanout("large", CONSUMERS, threads)
            recipients = done.recipients
            rates[roster].append(done.rate)
    costs = render_cost()
    languages = stack.sql("SELECT count(*) FILTER (WHERE language <> 'en'), count(*) FROM guardians")[0]
    best = {roster: max(values) for roster, values in rates.items()}
    ratio = best["mixed"] / best["english"]
    lines = [
        f"The event of benchmark 3 ({recipients:,} recipients: every guardian and teacher), "
        f"`{stack.consumer_command(CONSUMERS, threads)}`, MAIL_RATE_LIMIT=0, smtp-sink on loopback; "
        f"{rounds} rounds, each an all-English run then a run with {languages[0]:,} of {languages[1]:,} guardians "
        f"in {', '.join(OTHERS)}. Best of each:", "",
        *table(["Roster", "Runs (emails/s)", "Best"], [
            ["every guardian English", ", ".join(f"{r:,.0f}" for r in rates["english"]), f"{best['english']:,.0f}/s"],
            ["a third in nine other languages", ", ".join(f"{r:,.0f}" for r in rates["mixed"]),
             f"{best['mixed']:,.0f}/s"],
        ]), "",
        f"Mixed / all English: **{ratio:.2f}** (target ≥ {TARGET}).", "",
        "CPU time to render a batch of 100 messages (a new letter per batch, as a consumer does), per "
        "language, measured in this process: " + ", ".join(f"{language} {ms:.1f} ms" for language, ms in costs.items())
        + ".",
    ]
    figures = [Figure("Fan-out in many languages", "a third in other languages / all English",
                      f"{ratio:.2f} ({best['mixed']:,.0f}/s against {best['english']:,.0f}/s)", f"≥ {TARGET}",
                      ratio >= TARGET)]
    report.section("Fan-out in many languages", lines, figures)
    return figures


def main(argv=None) -> None:
    run_alone("bench.languages", __doc__, run, argv, sweep=True)


if __name__ == "__main__":
    main()
