"""The paper's ablations as learnability experiments, and their summary over seeds.

Each experiment is a stage-1 run followed by a stage-2 run initialised from it (``--init``). Stage-1 runs are
shared: every experiment with the same architecture and stage-1 consistency reads the same stage-1 run.

* consistency on / off per stage (the question of Table 11 and of the main-text consistency ablation):
  ``full`` (on, on), ``stage2_no_latent`` (Table 11's "w/o L_latent": self-reconstruction kept),
  ``stage2_off``, ``stage1_off``, ``both_off``;
* region tokens (Table 8): ``tokens_mask``, ``tokens_pos`` against ``full`` (both);
* semantic components (Table 9): ``no_local_aggregation``, ``no_pixel_enhancement``, ``no_semantic_guidance``.

:data:`DIRECTIONS` lists what the paper reports (``better`` beats ``worse``); :func:`directions` says, per
metric, the mean ± sd over seeds of the per-seed difference and on how many seeds it has the paper's sign.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

#: model overrides per architecture (both stages use the same: ``--init`` loads the weights strictly)
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "both": {},
    "mask": {"region_extractor": {"tokens": "mask"}, "loss": {"consistency_token": "mask"}},
    "pos": {"region_extractor": {"tokens": "pos"}},
    "no_local_aggregation": {"region_extractor": {"local_aggregation": False}},
    "no_pixel_enhancement": {"region_extractor": {"pixel_enhancement": False}},
    "no_semantic_guidance": {"region_extractor": {"semantic_guidance": False}},
}
#: loss weights per consistency level
CONSISTENCY: dict[str, dict[str, float]] = {
    "on": {"self_recon_weight": 1.0, "latent_weight": 1.0},
    "no_latent": {"self_recon_weight": 1.0, "latent_weight": 0.0},
    "off": {"self_recon_weight": 0.0, "latent_weight": 0.0},
}


@dataclass(frozen=True)
class Experiment:
    name: str
    paper: str  #: what it reproduces
    architecture: str = "both"
    stage1: str = "on"  #: consistency level in stage 1
    stage2: str = "on"  #: consistency level in stage 2

    @property
    def stage1_run(self) -> str:
        """The (shared) stage-1 run's name."""
        return f"{self.architecture}-{self.stage1}"


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment("full", "reference (Tables 8, 9, 11)"),
    Experiment("stage2_no_latent", "Table 11: stage 2 w/o L_latent", stage2="no_latent"),
    Experiment("stage2_off", "stage 2 without consistency", stage2="off"),
    Experiment("stage1_off", "stage 1 without consistency", stage1="off"),
    Experiment("both_off", "no consistency in either stage", stage1="off", stage2="off"),
    Experiment("tokens_mask", "Table 8: <mask> only", architecture="mask"),
    Experiment("tokens_pos", "Table 8: <pos> only", architecture="pos"),
    Experiment("no_local_aggregation", "Table 9: local aggregation off", architecture="no_local_aggregation"),
    Experiment("no_pixel_enhancement", "Table 9: pixel enhancement off", architecture="no_pixel_enhancement"),
    Experiment("no_semantic_guidance", "Table 9: semantic guidance off", architecture="no_semantic_guidance"),
)}  # fmt: skip

#: (better, worse, what the paper reports)
DIRECTIONS: tuple[tuple[str, str, str], ...] = (
    ("full", "stage2_no_latent", "Table 11: L_latent in stage 2 helps (RefCOCO val 82.4 vs 81.7)"),
    ("full", "stage2_off", "consistency in stage 2 helps"),
    ("full", "stage1_off", "consistency in stage 1 helps"),
    ("full", "both_off", "consistency helps"),
    ("full", "tokens_mask", "Table 8: <mask><pos> beats <mask> (SS 87.2 vs 85.1)"),
    ("full", "tokens_pos", "Table 8: <mask><pos> beats <pos> (SS 87.2 vs 83.7)"),
    ("tokens_mask", "tokens_pos", "Table 8: <mask> beats <pos> (SS 85.1 vs 83.7)"),
    ("full", "no_local_aggregation", "Table 9: local aggregation helps (SS 89.3 vs 88.7)"),
    ("full", "no_pixel_enhancement", "Table 9: pixel enhancement helps (SS 89.3 vs 88.1)"),
    ("full", "no_semantic_guidance", "Table 9: semantic guidance helps (ours: not in Table 9, which keeps it on)"),
)
#: the metrics of the summary (keys of the evaluation rows) and their column titles
METRICS = {"dlres_ciou": "DL-RES cIoU", "dlres_giou": "DL-RES gIoU", "dlc_attribute_accuracy": "DLC attr. acc.",
           "res_ciou": "RES cIoU", "roc_accuracy": "ROC acc."}  # fmt: skip
DIRECTION_METRICS = ("dlres_ciou", "dlres_giou", "dlc_attribute_accuracy")
#: training-loss parts shown beside the metrics (last logged step)
LOSS_PARTS = ("lm_loss", "mask_loss")


def stage1_runs(names: list[str]) -> list[tuple[str, str]]:
    """The distinct (architecture, stage-1 level) runs the experiments need, in first-use order."""
    return list(dict.fromkeys((EXPERIMENTS[n].architecture, EXPERIMENTS[n].stage1) for n in names))


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sd over seeds per (stage, experiment): ``{stage, experiment, seeds, <metric>: (mean, sd)}``."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["stage"], row["experiment"]), []).append(row)
    out = []
    for (stage, name), group in groups.items():
        entry: dict[str, Any] = {"stage": stage, "experiment": name, "seeds": sorted(r["seed"] for r in group)}
        for metric in METRICS:
            values = [r[metric] for r in group if r.get(metric) is not None]
            entry[metric] = _mean_sd(values) if values else None
        entry["train_s"] = statistics.fmean(r["train_s"] for r in group)
        for part in LOSS_PARTS:  # the last logged training step (one batch: noisy, but it moves before metrics do)
            values = [r["final_loss"][part] for r in group if part in r.get("final_loss", {})]
            entry[f"last_{part}"] = _mean_sd(values) if values else None
        out.append(entry)
    return sorted(out, key=lambda e: (e["stage"], list(EXPERIMENTS).index(e["experiment"])
                                      if e["experiment"] in EXPERIMENTS else 99, e["experiment"]))  # fmt: skip


def directions(rows: list[dict[str, Any]], stage: int = 2) -> list[dict[str, Any]]:
    """Per paper direction and metric: per-seed differences ``better - worse`` (mean, sd, seeds agreeing)."""
    by = {(r["experiment"], r["seed"]): r for r in rows if r["stage"] == stage}
    out = []
    for better, worse, claim in DIRECTIONS:
        seeds = sorted(s for (name, s) in by if name == better and (worse, s) in by)
        if not seeds:
            continue
        entry: dict[str, Any] = {"better": better, "worse": worse, "paper": claim, "seeds": seeds}
        for metric in DIRECTION_METRICS:
            diffs = [by[(better, s)][metric] - by[(worse, s)][metric] for s in seeds]
            mean, sd = _mean_sd(diffs)
            entry[metric] = {"mean": mean, "sd": sd, "agree": sum(d > 0 for d in diffs), "n": len(diffs),
                             "holds": mean > 0, "resolved": sd is not None and abs(mean) > sd}  # fmt: skip
        out.append(entry)
    return out


def _cell(value: tuple[float, float | None] | None) -> str:
    if value is None:
        return "n/a"
    mean, sd = value
    return f"{100 * mean:.1f}" + ("" if sd is None else f" ± {100 * sd:.1f}")


def _loss_cell(value: tuple[float, float | None] | None) -> str:
    if value is None:
        return "n/a"
    mean, sd = value
    return f"{mean:.2f}" + ("" if sd is None else f" ± {sd:.2f}")


def format_summary(summary: list[dict[str, Any]]) -> str:
    """The README table: one line per (stage, experiment), metrics x100, mean ± sd over seeds."""
    lines = ["| stage | experiment | reproduces | seeds | " + " | ".join(METRICS.values())
             + " | last LM loss | last mask loss | train s |",
             "|---:|---|---|---|" + "---:|" * (len(METRICS) + 3)]  # fmt: skip
    for e in summary:
        paper = EXPERIMENTS[e["experiment"]].paper if e["experiment"] in EXPERIMENTS else ""
        if e["stage"] == 1:
            paper = {"on": "stage 1 with consistency", "off": "stage 1 without consistency"}.get(
                e["experiment"].rsplit("-", 1)[-1], paper)
        cells = " | ".join(_cell(e[m]) for m in METRICS)
        losses = " | ".join(_loss_cell(e.get(f"last_{part}")) for part in LOSS_PARTS)
        seeds = ",".join(str(s) for s in e["seeds"])
        lines.append(f"| {e['stage']} | {e['experiment']} | {paper} | {seeds} | {cells} | {losses} | {e['train_s']:.0f} |")
    return "\n".join(lines)


def format_directions(entries: list[dict[str, Any]]) -> str:
    """Per paper direction: the difference (x100, mean ± sd over seeds) and on how many seeds it holds."""
    titles = [METRICS[m] for m in DIRECTION_METRICS]
    lines = ["| paper | better − worse | " + " | ".join(titles) + " |", "|---|---|" + "---|" * len(titles)]
    for e in entries:
        cells = []
        for metric in DIRECTION_METRICS:
            d = e[metric]
            sd = "" if d["sd"] is None else f" ± {100 * d['sd']:.1f}"
            cells.append(f"{100 * d['mean']:+.1f}{sd} ({d['agree']}/{d['n']})")
        lines.append(f"| {e['paper']} | {e['better']} − {e['worse']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
