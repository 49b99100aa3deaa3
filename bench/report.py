"""Figures, their ceilings and goals: the printed table and the JSON record."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Goal = Literal["ratio>=", "ratio<=", "value>=", "value<=", ""]


@dataclass
class Figure:
    """One measured quantity: notifier's samples, its ceiling's, and the goal.

    ``ratio`` is notifier's median over the ceiling's median, both from the
    same run of the suite.
    """

    scenario: str
    name: str
    unit: str
    samples: list[float] = field(default_factory=list)
    ceiling: str = ""
    ceiling_samples: list[float] = field(default_factory=list)
    goal: Goal = ""
    target: float | None = None
    error: str = ""
    note: str = ""
    cpu: list[dict[str, float]] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        """Return the median of notifier's samples."""
        return statistics.median(self.samples) if self.samples else None

    @property
    def ceiling_median(self) -> float | None:
        """Return the median of the ceiling's samples."""
        return statistics.median(self.ceiling_samples) if self.ceiling_samples else None

    @property
    def ratio(self) -> float | None:
        """Return notifier's median over the ceiling's median."""
        value, ceiling = self.median, self.ceiling_median
        if value is None or not ceiling:
            return None
        return value / ceiling

    @property
    def met(self) -> bool | None:
        """Return whether the goal is met, or None without a goal or a figure."""
        if not self.goal or self.target is None:
            return None
        measured = self.ratio if self.goal.startswith("ratio") else self.median
        if measured is None:
            return None
        if self.goal.endswith(">="):
            return measured >= self.target
        return measured <= self.target

    def goal_text(self) -> str:
        """Return the goal as the table shows it, such as '>= 0.9x'."""
        if not self.goal or self.target is None:
            return ""
        sign = self.goal[-2:]
        if self.goal.startswith("ratio"):
            return f"{sign} {self.target:g}x"
        return f"{sign} {self.target:g} {self.unit}"

    def to_json(self) -> dict[str, Any]:
        """Return every field plus the derived ones."""
        data = asdict(self)
        data.update(
            median=self.median,
            min=min(self.samples) if self.samples else None,
            max=max(self.samples) if self.samples else None,
            ceiling_median=self.ceiling_median,
            ceiling_min=min(self.ceiling_samples) if self.ceiling_samples else None,
            ceiling_max=max(self.ceiling_samples) if self.ceiling_samples else None,
            ratio=self.ratio,
            goal_text=self.goal_text(),
            met=self.met,
        )
        return data


def cpu_text(cpu: list[dict[str, float]]) -> str:
    """Return the server's median CPU share as 'total% (loop%)'."""
    if not cpu:
        return ""
    total = statistics.median(c["total_pct"] for c in cpu)
    loop = statistics.median(c["loop_pct"] for c in cpu)
    return f"{total:.0f}% ({loop:.0f}%)"


def spread(samples: list[float]) -> str:
    """Return 'median (min-max)' with a precision that suits the magnitude."""
    if not samples:
        return "-"
    median = statistics.median(samples)
    if len(samples) == 1:
        return _num(median)
    return f"{_num(median)} ({_num(min(samples))}-{_num(max(samples))})"


def _num(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


_HEADERS = (
    "scenario",
    "figure",
    "notifier",
    "ceiling",
    "ceiling value",
    "ratio",
    "goal",
    "met",
    "cpu (loop)",
)


def table(figures: list[Figure]) -> str:
    """Return the figures as one aligned plain-text table."""
    rows: list[tuple[str, ...]] = [_HEADERS]
    for f in figures:
        if f.error:
            rows.append((f.scenario, f.name, f"error: {f.error}", *[""] * 6))
            continue
        met = {True: "yes", False: "NO", None: ""}[f.met]
        ratio = "" if f.ratio is None else f"{f.ratio:.2f}x"
        rows.append(
            (
                f.scenario,
                f"{f.name} [{f.unit}]" if f.unit else f.name,
                spread(f.samples) if f.samples else f.note,
                f.ceiling,
                spread(f.ceiling_samples),
                ratio,
                f.goal_text(),
                met,
                cpu_text(f.cpu),
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(_HEADERS))]
    widths[2] = min(widths[2], 40)
    lines = []
    for n, row in enumerate(rows):
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(figures: list[Figure]) -> str:
    """Return the figures as a Markdown table, for the README."""
    lines = [
        "| scenario | figure | notifier, median (min-max) | ceiling | "
        "ceiling, median (min-max) | ratio | goal | met | server CPU (loop) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in figures:
        if f.error:
            lines.append(f"| {f.scenario} | {f.name} | error: {f.error} | | | | | | |")
            continue
        met = {True: "yes", False: "**no**", None: ""}[f.met]
        ratio = "" if f.ratio is None else f"{f.ratio:.2f}x"
        unit = f" [{f.unit}]" if f.unit else ""
        value = spread(f.samples) if f.samples else f.note
        ceiling = spread(f.ceiling_samples) if f.ceiling_samples else ""
        lines.append(
            f"| {f.scenario} | {f.name}{unit} | {value} | {f.ceiling} | {ceiling} "
            f"| {ratio} | {f.goal_text()} | {met} | {cpu_text(f.cpu)} |"
        )
    return "\n".join(lines)
