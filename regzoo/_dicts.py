"""Nested mappings addressed by dotted keys (`model.lr`), as configs and `--set` use them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def set_dotted(raw: dict[str, Any], path: Sequence[str], value: Any) -> None:
    """`set_dotted(raw, ["model", "lr"], 0.3)` sets raw["model"]["lr"], creating sections.

    Raises:
        ValueError: an intermediate key holds a value that is not a section, naming that key.
    """
    node = raw
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"{part!r} is not a section")
        node = child
    node[path[-1]] = value
