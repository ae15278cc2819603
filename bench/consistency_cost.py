"""Step-time cost of each consistency term in each stage, measured side by side.

    python bench/consistency_cost.py                           # the learnability model on CPU (~1 min)
    python bench/consistency_cost.py --config tiny --repeats 3
    python bench/consistency_cost.py --config 3b --device cuda  # the true 3B architecture, random init

The batch is the paper's stage-2 micro batch: two paired samples, i.e. four rows (each region's DLC row --
``<region>`` -> caption -- and its DL-RES row -- caption -> ``[SEG]``), at the configuration's long side. Per
stage (``set_stage``), four loss settings: no consistency (self-reconstruction and latent weights 0), the
self-reconstruction term alone, the latent term alone, both (the default), and both with self-reconstruction
from the extractor's ``<pos>`` computed although constant in stage 2 (what it cost before). Each repeat times one forward +
backward of every setting in turn (interleaved, so machine noise hits all alike); the report gives medians and
the ratio to the no-consistency step of the same stage, plus which terms the model skipped as constant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fclm_train.config import deep_merge  # noqa: E402
from fclm_train.model import FCLMConfig, build_fclm  # noqa: E402
from fclm_train.model.testing import ToySample, build_tiny_tokenizer, make_inputs, tiny_token_map  # noqa: E402

SETTINGS = {
    "none": {"self_recon_weight": 0.0, "latent_weight": 0.0},
    "recon": {"self_recon_weight": 1.0, "latent_weight": 0.0},
    "latent": {"self_recon_weight": 0.0, "latent_weight": 1.0},
    "both": {"self_recon_weight": 1.0, "latent_weight": 1.0},
    #: what stage 2 cost before the stage-keyed source: the frozen extractor's <pos> decoded, a constant loss
    "both_frozen_recon": {"self_recon_weight": 1.0, "latent_weight": 1.0, "self_recon_source": "extractor",
                          "skip_constant_terms": False},
}
TITLES = {"none": "none", "recon": "+ self-reconstruction", "latent": "+ latent", "both": "both (default)",
          "both_frozen_recon": "both, recon from the frozen extractor, not skipped"}


WEIGHT = {"recon": "self_recon", "latent": "latent", "lm": "ce", "mask": "bce"}


def _ellipse(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    ry, rx = rng.uniform(0.1, 0.25) * h, rng.uniform(0.1, 0.25) * w
    ys, xs = np.mgrid[:h, :w]
    return ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0


def paired_batch(cfg: FCLMConfig, n_pairs: int = 2) -> tuple[list[ToySample], list[tuple[int, int]]]:
    """``n_pairs`` DLC + DL-RES pairs on 4:3 images; pairs link region k with [SEG] k."""
    side = cfg.image_long_side
    rng = np.random.default_rng(0)
    caption = "A small red cup with a white handle, standing on the wooden table near the left edge."
    samples = []
    for _ in range(n_pairs):
        image = rng.integers(0, 256, (side * 3 // 4, side, 3), dtype=np.uint8)
        mask = _ellipse(side * 3 // 4, side, rng)
        samples.append(ToySample([("user", "<image>\nDescribe the region <region> in detail."),
                                  ("assistant", caption)], image, region_masks=[mask]))  # fmt: skip
        samples.append(ToySample([("user", f"<image>\n{caption} Please output segmentation mask."),
                                  ("assistant", "It is [SEG].")], image, seg_masks=[mask]))  # fmt: skip
    return samples, [(k, k) for k in range(n_pairs)]


def build(config: str, setting: str, device: torch.device):
    overrides = {"loss": SETTINGS[setting]}
    if config == "learnability":
        from bench.learnability.run import LEARNABILITY_MODEL

        cfg = FCLMConfig.preset("tiny", **deep_merge(LEARNABILITY_MODEL, overrides))
    else:
        cfg = FCLMConfig.preset(config, **overrides)
    torch.manual_seed(0)
    with torch.device(device):
        model = build_fclm(cfg)
    model.train()
    return cfg, model


def step(model, inputs, autocast) -> tuple[float, tuple[str, ...]]:
    if inputs.input_ids.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with autocast:
        out = model(inputs)
    out.loss.backward()
    if inputs.input_ids.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    return elapsed, out.skipped


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    tokenizer = build_tiny_tokenizer()
    models = {name: build(args.config, name, device) for name in SETTINGS}
    cfg = models["none"][0]
    samples, pairs = paired_batch(cfg)
    inputs = make_inputs(samples, tokenizer, cfg, pairs=pairs, token_map=tiny_token_map(tokenizer, cfg)).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)  # fmt: skip
    report: dict = {"config": args.config, "device": str(device), "rows": len(samples), "repeats": args.repeats,
                    "stages": {}}  # fmt: skip
    for stage in (1, 2):
        for _, model in models.values():
            model.set_stage(stage)
        times: dict[str, list[float]] = {name: [] for name in SETTINGS}
        skipped: dict[str, tuple[str, ...]] = {}
        for repeat in range(args.warmup + args.repeats):
            for name, (_, model) in models.items():
                elapsed, skipped[name] = step(model, inputs, autocast)
                if repeat >= args.warmup:
                    times[name].append(elapsed)
        base = statistics.median(times["none"])
        report["stages"][stage] = {
            name: {"median_s": round(statistics.median(t), 4), "ratio": round(statistics.median(t) / base, 3),
                   "skipped": [s for s in skipped[name] if SETTINGS[name].get(f"{WEIGHT[s]}_weight")]}
            for name, t in times.items()
        }  # fmt: skip
    return report


def format_report(report: dict) -> str:
    lines = [f"{report['config']} on {report['device']}, {report['rows']} rows (2 DLC + DL-RES pairs), "
             f"medians of {report['repeats']} interleaved steps",
             "| stage | " + " | ".join(TITLES.values()) + " |", "|---:|" + "---:|" * len(TITLES)]  # fmt: skip
    for stage, cells in report["stages"].items():
        parts = []
        for name in SETTINGS:
            c = cells[name]
            note = f" (skipped as constant: {', '.join(c['skipped'])})" if c["skipped"] else ""
            parts.append(f"{c['median_s'] * 1000:.0f} ms = {c['ratio']:.2f}×{note}")
        lines.append(f"| {stage} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=["learnability", "tiny", "3b", "7b"], default="3b" if cuda else "learnability")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = run(args)
    print(json.dumps(report) if args.json else format_report(report))
    return report


if __name__ == "__main__":
    main()
