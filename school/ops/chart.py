"""The throughput chart's geometry, worked out on the server so the page needs no chart library."""
from __future__ import annotations

from dataclasses import dataclass

from .stats import Throughput

WIDTH, HEIGHT = 720, 180
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 24  # room for the axis labels


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    kind: str  # sent or failed
    count: int
    label: str


@dataclass(frozen=True)
class Tick:
    x: float
    y: float
    label: str
    anchor: str = "middle"


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    plot_left: int
    plot_bottom: int
    plot_right: int
    plot_top: int
    bars: list[Bar]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    sent: int
    failed: int
    summary: str


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50 … that is at least ``value``."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def throughput_chart(t: Throughput) -> Chart:
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    bottom = TOP + plot_height
    top_value = nice_ceiling(max(t.peak, 1))
    slot = plot_width / max(len(t.starts), 1)
    bar_width = max(slot - 1, 1)
    bars = []
    for index, (sent, failed) in enumerate(zip(t.sent, t.failed)):
        x = LEFT + index * slot
        base = bottom
        for count, kind in ((sent, "sent"), (failed, "failed")):
            if count:
                height = plot_height * count / top_value
                base -= height
                ago = (len(t.starts) - 1 - index) * t.step
                bars.append(Bar(round(x, 1), round(base, 1), round(bar_width, 1), round(height, 1), kind, count,
                                f"{count} {kind} in 10 s, {ago} s ago" if ago else f"{count} {kind} in the last 10 s"))
    minutes = len(t.starts) * t.step // 60
    x_ticks = [Tick(round(LEFT + plot_width * (1 - m / minutes), 1), HEIGHT - 6,
                    "now" if m == 0 else f"−{m} min", "end" if m == 0 else "middle")
               for m in range(minutes, -1, -5)] if minutes else []
    y_ticks = [Tick(LEFT - 6, round(bottom - plot_height * v / top_value, 1) + 4, str(v), "end")
               for v in sorted({0, top_value // 2, top_value})]
    sent, failed = sum(t.sent), sum(t.failed)
    summary = (f"{sent:,} sent and {failed:,} failed in the last {minutes} minutes, "
               f"at most {t.peak:,} in any {t.step} seconds")
    return Chart(WIDTH, HEIGHT, LEFT, bottom, WIDTH - RIGHT, TOP, bars, x_ticks, y_ticks, sent, failed, summary)
