"""The report's charts as SVG documents (matplotlib, Agg backend, glyphs as paths: no fonts or files needed to view).

matplotlib is the ``report`` extra (``pip install fclm[report]``); :func:`available` says why when it is absent,
and the page shows the numbers as tables instead.
"""

from __future__ import annotations

import io
import math
from collections import Counter

ACCENT, BUDGET = "#3b6ea5", "#c0392b"


def available() -> str | None:
    """None when matplotlib imports, else the reason."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        return f"plots need matplotlib (pip install fclm[report]): {exc}"
    return None


def _figure(width: float = 5.4, height: float = 2.9):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "path", "svg.hashsalt": "fclm-report", "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False})  # fmt: skip
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    ax.grid(axis="y", color="#e4e4e4", linewidth=0.6)
    ax.set_axisbelow(True)
    return fig, ax


def _svg(fig) -> str:
    """The figure as an SVG document (the page embeds it as an ``<img>`` data URI, so ids never collide)."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return buffer.getvalue()


def tokens_histogram(tokens: list[int], max_length: int) -> str:
    """Tokens per sample with the ``max_length`` budget as a line and the count above it."""
    fig, ax = _figure()
    top = max(max(tokens), max_length)
    bins = min(60, max(10, len(set(tokens))))
    ax.hist(tokens, bins=bins, range=(0, top * 1.02), color=ACCENT)
    ax.axvline(max_length, color=BUDGET, linestyle="--", linewidth=1.2)
    above = sum(t > max_length for t in tokens)
    ax.text(max_length, ax.get_ylim()[1] * 0.95, f" max_length {max_length:,}\n {above:,} above", color=BUDGET,
            va="top", ha="right" if max_length > top * 0.7 else "left")  # fmt: skip
    ax.set_xlabel("tokens (longest view, image pads included)")
    ax.set_ylabel("samples")
    return _svg(fig)


def bar_counts(counts: Counter, xlabel: str, ylabel: str = "samples", width: float = 5.4) -> str:
    fig, ax = _figure(width)
    keys = sorted(counts, key=lambda k: (int(k) if str(k).isdigit() else math.inf, str(k)))
    ax.bar([str(k) for k in keys], [counts[k] for k in keys], color=ACCENT)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(keys) > 12:
        ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    return _svg(fig)


def mask_area_histogram(areas: list[float]) -> str:
    """Region mask area as a fraction of the image, on log bins (small parts and whole-image stuff both show)."""
    import numpy as np

    fig, ax = _figure()
    low = max(min(a for a in areas if a > 0) if any(a > 0 for a in areas) else 1e-5, 1e-6)
    ax.hist([max(a, low) for a in areas], bins=np.logspace(math.log10(low), 0, 40), color=ACCENT)
    ax.set_xscale("log")
    ax.set_xlabel("mask area / image area")
    ax.set_ylabel("regions")
    return _svg(fig)


def image_sizes_scatter(sizes: list[tuple[int, int]]) -> str:
    fig, ax = _figure(4.2, 3.2)
    ax.grid(color="#e4e4e4", linewidth=0.6)
    ax.scatter([w for w, _ in sizes], [h for _, h in sizes], s=9, alpha=0.5, color=ACCENT, linewidths=0)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    return _svg(fig)


def template_bars(table: str, ids: Counter) -> str:
    """Uses of each template id of one table: a seeded choice should give roughly flat bars."""
    fig, ax = _figure(3.6 if len(ids) <= 12 else 5.4, 2.3)
    keys = sorted(ids, key=lambda k: int(k) if k.isdigit() else k)
    ax.bar(keys, [ids[k] for k in keys], color=ACCENT)
    ax.set_title(table, fontsize=9, loc="left")
    ax.set_ylabel("uses")
    ax.tick_params(axis="x", labelsize=6 if len(keys) > 12 else 8)
    return _svg(fig)
