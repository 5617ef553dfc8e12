"""The benchmark table: rows with targets, the met flag, and its JSON and markdown forms.

A row's ``target`` is ``None`` or a string ``"<op> <number>"`` with ``op`` one of ``>=``,
``<=``, ``>``, ``<``; ``met`` is ``"yes"``/``"no"`` from comparing ``value`` with it, and
``"n.a."`` when the row has no target or no value (a skipped measurement).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Any

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
COLUMNS = ("part", "name", "value", "unit", "target", "met", "note")


def parse_target(target: str) -> tuple[str, float]:
    """``">= 0.9"`` → ``(">=", 0.9)``."""
    op, _, number = target.strip().partition(" ")
    if op not in OPS:
        raise ValueError(f"bad target {target!r}: expected '<op> <number>' with op in {list(OPS)}")
    return op, float(number)


def met_flag(value: float | None, target: str | None) -> str:
    """``"yes"``/``"no"`` when both a value and a target exist, else ``"n.a."``."""
    if target is None or value is None or not math.isfinite(value):
        return "n.a."
    op, number = parse_target(target)
    return "yes" if OPS[op](value, number) else "no"


@dataclasses.dataclass
class Row:
    """One measurement. ``value`` is None for a skipped measurement (say why in ``note``)."""

    part: str
    name: str
    value: float | None
    unit: str
    target: str | None = None
    note: str = ""

    def __post_init__(self):
        if self.value is not None:
            self.value = float(self.value)
        if self.target is not None:
            parse_target(self.target)  # fail early on a malformed target

    @property
    def met(self) -> str:
        return met_flag(self.value, self.target)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "met": self.met}


def format_value(value: float | None) -> str:
    """Human-readable number: thousands separators for large values, 3 significant digits for
    the rest; ``"-"`` for a skipped measurement."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if value == int(value):
        return str(int(value))
    return f"{value:.3g}"


def cells(row: dict[str, Any]) -> list[str]:
    """The markdown/terminal cells of a row dict (``Row.to_dict()``)."""
    return [
        str(row["part"]),
        str(row["name"]),
        format_value(row["value"]),
        str(row["unit"]),
        row["target"] or "-",
        row["met"],
        str(row["note"]),
    ]


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(rows: list[dict[str, Any]], header: str = "") -> str:
    """A markdown document: optional header paragraph, then one table of ``rows``."""
    lines = [header, ""] if header else []
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    for row in rows:
        lines.append("| " + " | ".join(_escape(c) for c in cells(row)) + " |")
    return "\n".join(lines) + "\n"


def parse_markdown_table(text: str) -> list[dict[str, str]]:
    """The rows of the table in ``to_markdown``'s output, as dicts of cell strings."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith("| part |"):
            continue
        parts = [p.strip().replace("\\|", "|") for p in _split_cells(line)]
        rows.append(dict(zip(COLUMNS, parts, strict=True)))
    return rows


def _split_cells(line: str) -> list[str]:
    """Split ``| a | b |`` on unescaped bars."""
    out, current, i = [], "", 1  # skip the leading bar
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line) and line[i + 1] == "|":
            current += "\\|"
            i += 2
            continue
        if line[i] == "|":
            out.append(current)
            current = ""
        else:
            current += line[i]
        i += 1
    return out


def to_text(rows: list[dict[str, Any]]) -> str:
    """A fixed-width terminal table (long notes are left unpadded at the end of each line)."""
    table = [list(COLUMNS)] + [cells(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS) - 1)]
    lines = []
    for r in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1])
    return "\n".join(lines)
