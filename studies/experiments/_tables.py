"""An experiment's table as CSV (for tools) and markdown (for people), and on the console."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from regzoo.studies.experiments._spec import Row


def fmt(value: Any) -> str:
    """Numbers to 4 significant digits; None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    return str(value)


def columns(rows: list[Row]) -> list[str]:
    """Every key of every row, in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def write_table(rows: list[Row], stem: Path) -> Path:
    """Write `stem.csv` (full precision) and `stem.md`; return the markdown path."""
    cols = columns(rows)
    stem.parent.mkdir(parents=True, exist_ok=True)
    with stem.with_suffix(".csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in cols) + " |" for row in rows]
    md = stem.with_suffix(".md")
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return md


def print_table(rows: list[Row], title: str, console: Console) -> None:
    table = Table(title=title)
    cols = columns(rows)
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(*(fmt(row.get(c)) for c in cols))
    console.print(table)
