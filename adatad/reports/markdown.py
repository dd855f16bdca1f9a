"""Markdown pieces every report shares: the one table writer and how values are written in cells."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def cell(text: Any) -> str:
    """A table cell: pipes escaped, one line."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[Any], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    """A markdown table; columns from `numeric_from` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def config_value(value: Any) -> str:
    """A config value as YAML writes it (null, true/false, 1.0 visibly a float, [a, b])."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = f"{value:g}"
        return text if any(c in text for c in ".en") else f"{text}.0"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(config_value(v) for v in value) + "]"
    return str(value)


def pct(fraction: float) -> str:
    return f"{100 * fraction:.2f}"


def duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    human = f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"
    return f"{seconds:,.1f} s ({human})"


def number(value: Any) -> str:
    if isinstance(value, bool) or not is_number(value):
        return config_value(value)
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.1f}"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested config groups as (dotted key, value) rows."""
    out: list[tuple[str, Any]] = []
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out += flatten(value, name)
        else:
            out.append((name, value))
    return out
