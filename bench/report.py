"""Printing figures and appending them to docs/benchmarks.md, with the machine and the versions."""
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
PACKAGES = ("Flask", "Flask-SQLAlchemy", "SQLAlchemy", "psycopg", "huey", "redis", "Flask-Mail", "Jinja2",
            "gunicorn", "limits")
RUNS_HEADING = "## Runs"


@dataclass
class Figure:
    """One line of the summary: what was measured, its value, and the target it is held to."""

    benchmark: str
    what: str
    value: str
    target: str = "—"
    holds: bool | None = None

    @property
    def verdict(self) -> str:
        return {True: "holds", False: "**missed**", None: "—"}[self.holds]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def ms(seconds: float) -> str:
    return "—" if seconds != seconds else f"{seconds * 1000:.1f} ms"


def _machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                          if line.startswith("MemTotal:")))
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    return f"{os.cpu_count()} cores ({model or platform.machine()}), {mem_kb / 1024 / 1024:.1f} GiB memory, " \
           f"Linux {platform.release()}"


def load_average() -> str:
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _tool_version(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    return (result.stdout or result.stderr).strip().splitlines()[0] if (result.stdout or result.stderr) else "?"


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "?"
    return head + (" (with uncommitted changes)" if dirty else "") if head else "?"


def versions(database: str = "") -> str:
    packages = []
    for name in PACKAGES:
        try:
            packages.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    redis = _tool_version(["redis-server", "--version"]).replace("Redis server ", "redis-server ").split(" sha=")[0]
    postfix = _tool_version(["postconf", "-d", "-h", "mail_version"])
    parts = [f"Python {platform.python_version()}", database, redis, f"smtp-sink (postfix {postfix})",
             ", ".join(packages)]
    return "; ".join(p for p in parts if p)


class Report:
    """What one bench command prints and appends to docs/benchmarks.md."""

    def __init__(self, module: str, argv: list[str], record: bool = True):
        self.command = shlex.join([".venv/bin/python", "-m", module, *argv])
        self.record = record
        self.started = time.time()
        self.figures: list[Figure] = []
        self.header_written = False
        self.load_at_start = load_average()

    def _append(self, lines: list[str]) -> None:
        print("\n".join(lines), flush=True)
        if not self.record:
            return
        DOCS.parent.mkdir(parents=True, exist_ok=True)
        existing = DOCS.read_text() if DOCS.exists() else ""
        with DOCS.open("a") as out:
            if RUNS_HEADING not in existing:
                out.write(("\n" if existing else "# Benchmarks\n\n") + RUNS_HEADING + "\n")
            out.write("\n".join(lines) + "\n")

    def header(self, databases: list[str]) -> None:
        if self.header_written:
            return
        self.header_written = True
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.started))
        self._append([
            "",
            f"### {when}: `{self.command}`",
            "",
            f"- Machine: {_machine()}; load average at the start {self.load_at_start}",
            f"- Versions: {versions(' and '.join(databases))}",
            f"- Code: commit {_commit()}",
        ])

    def section(self, title: str, lines: list[str], figures: list[Figure]) -> None:
        self.figures.extend(figures)
        self._append(["", f"#### {title}", "", *lines])

    def summary(self) -> None:
        minutes = (time.time() - self.started) / 60
        rows = [[f.benchmark, f.what, f.value, f.target, f.verdict] for f in self.figures]
        self._append(["", "#### Summary", "",
                      *table(["Benchmark", "Figure", "Value", "Target", "Verdict"], rows),
                      "", f"Took {minutes:.1f} min; load average at the end {load_average()}."])


def parse_args(description: str, argv: list[str] | None = None, sweep: bool = False, students: int = 100_000):
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--students", type=int, default=students, help=f"size of the demo school (default {students:,})")
    parser.add_argument("--threads", type=int, default=None,
                        help="worker threads per consumer" + (" (default: the best of a short sweep)" if sweep
                                                              else " (default 8)"))
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return args
