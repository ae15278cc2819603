"""Evaluation reports: metric results -> one JSON document and a printed table.

Metric classes return fractions; papers print x100. A report keeps both, so a number can be
traced back without re-scaling by hand: per entry, ``metrics`` (fractions), ``x100`` (the same,
times 100), ``counts`` (integers such as ``n``) and ``notes`` (strings such as ``skipped``).
Entries are named ``"<task>/<split>"`` by convention, e.g. ``"refcoco/val"``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPORT_VERSION = 1


def make_report(results: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any] | None = None) -> dict:
    """Splits each result dict into metrics / x100 / counts / notes.

    Args:
        results: entry name -> a ``compute()`` / ``summary()`` dict. Floats are metrics, ints
            are counts, strings are notes, None is a metric that was not computed.
        meta: free-form context stored as is (checkpoint, judge model, seed, ...).
    """
    entries = {}
    for name, values in results.items():
        entry: dict[str, dict] = {"metrics": {}, "x100": {}, "counts": {}, "notes": {}}
        for key, value in values.items():
            if isinstance(value, bool):
                raise TypeError(f"{name}.{key}: booleans are neither metrics nor counts")
            if isinstance(value, int):
                entry["counts"][key] = value
            elif isinstance(value, str):
                entry["notes"][key] = value
            elif value is None or isinstance(value, float):
                entry["metrics"][key] = value
                entry["x100"][key] = None if value is None else 100.0 * value
            else:
                raise TypeError(f"{name}.{key}: unsupported value type {type(value).__name__}")
        entries[name] = entry
    return {"report_version": REPORT_VERSION, "meta": dict(meta or {}), "results": entries}


def write_report(report: Mapping[str, Any], path: str | Path) -> Path:
    """Writes the report as indented JSON (NaN refused: it is not JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return path


def format_table(report: Mapping[str, Any], digits: int = 1) -> str:
    """A plain-text table: one row per entry, one column per metric (x100), then ``n``-like counts."""
    results = report["results"]
    metric_names = _ordered_union(entry["x100"] for entry in results.values())
    count_names = _ordered_union(entry["counts"] for entry in results.values())
    header = ["entry", *metric_names, *count_names]
    rows = [header]
    for name, entry in results.items():
        cells = [name]
        cells += [_metric_cell(entry["x100"], metric, digits) for metric in metric_names]
        cells += [str(entry["counts"][c]) if c in entry["counts"] else "" for c in count_names]
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"{name}: {key}: {text}" for name, entry in results.items() for key, text in entry["notes"].items()]
    return "\n".join(lines + notes)


def _metric_cell(values: Mapping[str, float | None], metric: str, digits: int) -> str:
    """Blank when the entry has no such metric, ``n/a`` when it was not computed."""
    if metric not in values:
        return ""
    value = values[metric]
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ordered_union(dicts) -> list[str]:
    names: dict[str, None] = {}
    for d in dicts:
        names.update(dict.fromkeys(d))
    return list(names)
