"""Comparing result records across runs: everything must match but the time each was made."""

from __future__ import annotations

from typing import Any


def timeless(value: Any) -> Any:
    """A JSON record (or a list of them) without provenance's `created`, the one field two runs never share."""
    if isinstance(value, list):
        return [timeless(v) for v in value]
    if isinstance(value, dict) and isinstance(value.get("provenance"), dict):
        return {**value, "provenance": {k: v for k, v in value["provenance"].items() if k != "created"}}
    return value
