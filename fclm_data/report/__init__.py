"""``fclm-data report``: a build directory as one static HTML page a person can read offline.

The page (``OUT/report/index.html`` by default) holds the ledger per source with reject reasons and example records,
per entry and task a seeded gallery of samples drawn as the model gets them (``fclm_data.render``), the
distributions worth a look before training (tokens under the Qwen tokenizer against ``max_length``, regions per
sample, mask areas, image sizes, template ids per table) and the build's fingerprint, recipe, seed, options and
leakage summary. Images and charts are inline data URIs: the file can be mailed or opened from an archive.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fclm_data.report.collect import BuildData, ReportError, collect

__all__ = ["ReportError", "ReportResult", "write_report"]

#: Gallery samples per (entry, task).
DEFAULT_SAMPLES = 8


@dataclass
class ReportResult:
    path: Path
    bytes: int
    samples: int
    gallery_samples: int
    gallery_images: int  #: one per view: a paired sample shows two
    tokens_counted: int
    over_max_length: int | None
    max_length: int | None
    notes: list[str]

    def to_dict(self) -> dict:
        return {**vars(self), "path": str(self.path)}


def write_report(
    out_dir: Path, html: Path | None = None, samples: int = DEFAULT_SAMPLES, seed: int = 0,
    max_length: int | None = None, leakage: Path | None = None, progress: Callable[[int], None] | None = None,
) -> ReportResult:  # fmt: skip
    """Scan ``out_dir`` and write the page; raises :class:`ReportError` for an unreadable build or leakage file."""
    from fclm_data.report.page import render_page
    from fclm_data.report.tokens import TokenCounter

    html = html or out_dir / "report" / "index.html"
    leak = _read_leakage(leakage) if leakage else None
    counter = TokenCounter(max_length)
    data: BuildData = collect(out_dir, samples, seed, counter.count if counter.available else None, progress)
    data.token_note, data.max_length = counter.note, counter.max_length
    page = render_page(data, samples, seed, leak)
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(page, encoding="utf-8")
    picked = [p for group in data.gallery.values() for p in group]
    over = sum(t > data.max_length for t in data.tokens) if data.tokens else None
    return ReportResult(
        path=html, bytes=len(page.encode("utf-8")), samples=data.samples, gallery_samples=len(picked),
        gallery_images=sum(2 if p.sample.get("pair") else 1 for p in picked), tokens_counted=len(data.tokens),
        over_max_length=over, max_length=data.max_length, notes=[n for n in (counter.note, *sorted(data.prompt_notes)) if n],
    )  # fmt: skip


def _read_leakage(path: Path) -> dict:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not a readable `fclm-data leakage --json` report ({exc})") from exc
    if not isinstance(body, dict) or not isinstance(body.get("sources"), list):
        raise ReportError(f"{path}: not a `fclm-data leakage --json` report (no 'sources' list)")
    return body
