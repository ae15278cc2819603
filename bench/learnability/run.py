"""Learnability benchmark: can FCLM's full path learn synthetic scenes on a CPU, with and without consistency?

    python -m bench.learnability.run --out runs/learnability               # both variants, ~20 min on 2 cores
    python -m bench.learnability.run --out /tmp/l --variants consistency --max-steps 300
    python -m bench.learnability.run --out /tmp/l --smoke                  # a few steps: the path runs end to end

Per variant, in order (wall time of each stage in the table):

1. **generate** -- train and held-out data roots (``generate.py``: Describe-Anything, RefCOCO, PACO-LVIS layouts);
2. **build** -- ``fclm-data``'s builder on both (train: dam_sam + refcoco train + paco_lvis; held-out: dam_sam +
   refcoco val);
3. **train** -- ``fclm_train.train.Trainer``, stage 1 (every module but SAM's frozen encoder) from scratch, the
   ``learnability`` model config (:data:`LEARNABILITY_MODEL`), with the self-reconstruction and latent losses
   at weight 1 (``consistency``) or 0 (``no_consistency``);
4. **evaluate** -- on held-out scenes, with the predictor (greedy generation, the model must emit ``[SEG]``):
   DL-RES cIoU / gIoU (``SegmentationTask`` on the DL-RES views), DLC attribute accuracy (the caption of each
   held-out region states its colour / shape / size / texture: ``attributes.py``), ROC accuracy (the exact shape
   label for the same regions), and RES cIoU on RefCOCO-format val scenes.

Nothing is tuned on the held-out scenes: the configuration below was fixed on the training loss and a
separate validation seed before the reported run.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .attributes import SCORED, attribute_hits
from .generate import Difficulty, SplitSize, generate_split

#: A CPU-sized FCLM (overrides of the ``tiny`` preset; the tokenizer is ``BenchConfig.tokenizer``): a 4-layer,
#: 128-wide LLM; the frame (Qwen input and SAM) at 128 px, SAM patches of 8 px, so masks decode on a 64 x 64 grid.
LEARNABILITY_MODEL: dict[str, Any] = {
    "image_long_side": 128,
    "llm": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
            "num_key_value_heads": 2, "mrope_section": [4, 6, 6]},
    "sam": {"image_size": 128, "patch_size": 8, "prompt_dim": 64, "decoder_mlp_dim": 256, "decoder_num_heads": 4,
            "iou_head_hidden_dim": 64},
    "region_extractor": {"num_heads": 4, "crop_size": 64, "pos_mask_size": 16, "pos_hidden_size": 64},
}  # fmt: skip
VARIANTS = {"consistency": {"self_recon_weight": 1.0, "latent_weight": 1.0},
            "no_consistency": {"self_recon_weight": 0.0, "latent_weight": 0.0}}  # fmt: skip


@dataclass
class BenchConfig:
    train_sizes: SplitSize = field(default_factory=lambda: SplitSize(dam=600, refcoco=600, paco=300))
    heldout_sizes: SplitSize = field(default_factory=lambda: SplitSize(dam=60, refcoco=40, paco=0))
    difficulty: Difficulty = field(default_factory=Difficulty)
    model: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(LEARNABILITY_MODEL)))
    max_steps: int = 1800  #: ~10 CPU-minutes of training on 2 cores (1,200 steps took 380 s)
    micro_batch_size: int = 4  #: samples per step (a DLC + DL-RES pair counts once)
    lr: float = 2e-3
    num_workers: int = 1
    threads: int = 2
    eval_batch_size: int = 16
    eval_limit: int | None = None  #: held-out samples per task (None: all)
    max_new_tokens: int = 200  #: a caption is ~30 word tokens (~140 with the byte tokenizer)
    #: no system turn: Qwen's default one is 9 words that every row would repeat
    system_prompt: str | None = None
    #: "words": the BPE fitted to the scenes' language (``tokenizer.py``); "bytes": the tiny preset's tokenizer
    tokenizer: str = "words"
    seed: int = 0


def smoke_config() -> BenchConfig:
    """A few steps on a few scenes: proves the path runs and reports, says nothing about learning."""
    return BenchConfig(train_sizes=SplitSize(dam=6, refcoco=4, paco=4), heldout_sizes=SplitSize(dam=3, refcoco=2, paco=0),
                       max_steps=2, micro_batch_size=2, num_workers=0, eval_limit=4, max_new_tokens=4)  # fmt: skip


# --------------------------------------------------------------------------------------------- stages
def prepare_data(out: Path, cfg: BenchConfig) -> tuple[Path, Path]:
    """Generate and build both splits; returns (train shards, held-out shards)."""
    from fclm_data.build.run import BuildConfig, run_build
    from fclm_data.recipes import parse_recipe

    roots = {split: generate_split(out / "data" / split, split, sizes, cfg.difficulty, cfg.seed)
             for split, sizes in (("train", cfg.train_sizes), ("heldout", cfg.heldout_sizes))}  # fmt: skip
    entries = ((cfg.train_sizes.dam, {"source": "dam_sam"}),
               (cfg.train_sizes.refcoco, {"source": "refcoco", "options": {"split": "train"}}),
               (cfg.train_sizes.paco, {"source": "paco_lvis", "options": {"split": "train"}}))  # fmt: skip
    train = [entry for size, entry in entries if size]
    heldout = [{"source": "dam_sam"}, {"source": "refcoco", "options": {"split": "val"}}]
    shards = {}
    for split, sources in (("train", train), ("heldout", heldout)):
        recipe = parse_recipe({"name": f"learnability_{split}", "seed": cfg.seed, "shard_size": 64, "sources": sources})
        shards[split] = out / "shards" / split
        run_build(recipe, BuildConfig(data_root=roots[split], out_dir=shards[split], overwrite=True))
    return shards["train"], shards["heldout"]


def prepare_llm(out: Path, cfg: BenchConfig) -> tuple[Path | None, dict[str, Any]]:
    """(``--llm`` directory or None, model overrides): the word tokenizer needs a Qwen directory to travel in."""
    if cfg.tokenizer == "bytes":
        return None, cfg.model
    from .tokenizer import write_llm_dir

    return out / "llm", write_llm_dir(out / "llm", cfg.model, cfg.seed)


def train_variant(out: Path, train_shards: Path, cfg: BenchConfig, loss: dict[str, float], llm: Path | None,
                  model: dict[str, Any]) -> Path:  # fmt: skip
    """Stage-1 training from scratch; returns the run directory (its last checkpoint)."""
    from fclm_train.config import TrainConfig
    from fclm_train.train import Trainer

    body = {
        "model": "tiny", "stage": 1, "out_dir": str(out), "max_steps": cfg.max_steps, "seed": cfg.seed,
        "llm_path": None if llm is None else str(llm),
        "global_batch_size": cfg.micro_batch_size, "gradient_checkpointing": False, "tensorboard": False,
        "save_every": cfg.max_steps, "keep_last": 1, "log_every": max(1, cfg.max_steps // 20),
        "model_overrides": {**model, "loss": dict(loss)},
        "optim": {"lr": cfg.lr},
        "data": {"shards": [str(train_shards)], "micro_batch_size": cfg.micro_batch_size,
                 "num_workers": cfg.num_workers, "shuffle_buffer": 256, "system_prompt": cfg.system_prompt},
    }  # fmt: skip
    return Trainer(TrainConfig.from_dict(body)).run()


def evaluate_heldout(predictor, heldout_shards: Path, cfg: BenchConfig) -> dict[str, Any]:
    """DL-RES / RES cIoU, DLC attribute accuracy and ROC accuracy on the held-out scenes."""
    from fclm_train.eval.run import batched, evaluate, iter_samples, view_query
    from fclm_train.eval.tasks.res import SegmentationTask

    seg = evaluate(predictor, SegmentationTask("generate"), [str(heldout_shards)], cfg.eval_limit, cfg.eval_batch_size)
    dam = [s for s in iter_samples([str(heldout_shards)], predictor.config.side, predictor.config.draft)
           if s.meta["task"] == "dlc_dlres"][: cfg.eval_limit]  # fmt: skip
    hits: dict[str, list[bool]] = {name: [] for name in (*SCORED, "position")}
    roc: list[bool] = []
    for samples in batched(dam, cfg.eval_batch_size):
        captions = predictor.predict_batch([view_query(s, s.meta) for s in samples])
        labels = predictor.predict_batch([_roc_query(predictor, s) for s in samples])
        for sample, caption, label in zip(samples, captions, labels):
            region = sample.meta["regions"][sample.meta["region_inputs"][0]]
            for name, hit in attribute_hits(caption.text, region["caption"]).items():
                hits[name].append(hit)
            roc.append(label.text.strip().rstrip(".").lower() == region["label"])
    scored = [h for name in SCORED for h in hits[name]]
    return {
        "dlres_ciou": seg["dam_sam"]["ciou"], "dlres_giou": seg["dam_sam"]["giou"], "dlres_n": seg["dam_sam"]["n"],
        "dlres_no_mask": seg["dam_sam"]["no_mask"],
        "res_ciou": seg.get("refcoco", {}).get("ciou"), "res_n": seg.get("refcoco", {}).get("n", 0),
        "dlc_attribute_accuracy": sum(scored) / max(1, len(scored)),
        **{f"dlc_{name}": sum(v) / max(1, len(v)) for name, v in hits.items()},
        "roc_accuracy": sum(roc) / max(1, len(roc)), "dlc_roc_n": len(roc),
    }  # fmt: skip


def _roc_query(predictor, sample):
    from fclm_train.infer import Query

    meta = sample.meta
    return Query(sample.image, [{"role": "user", "content": predictor.templates.classify()}], meta["regions"],
                 list(meta["region_inputs"]), meta["visual_prompt"], meta["key"])  # fmt: skip


def run(out: Path, cfg: BenchConfig, variants: list[str]) -> list[dict[str, Any]]:
    """The whole benchmark; writes ``out/results.json`` and returns one row per variant."""
    from fclm_train.infer import GenerationConfig, Predictor

    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train_shards, heldout_shards = prepare_data(out, cfg)
    llm, model = prepare_llm(out, cfg)
    data_seconds = time.perf_counter() - started
    rows = []
    for name in variants:
        began = time.perf_counter()
        run_dir = train_variant(out / name, train_shards, cfg, VARIANTS[name], llm, model)
        trained = time.perf_counter()
        predictor = Predictor.from_checkpoint(run_dir, generation=GenerationConfig(max_new_tokens=cfg.max_new_tokens))
        metrics = evaluate_heldout(predictor, heldout_shards, cfg)
        rows.append({"variant": name, **metrics, "train_s": round(trained - began, 1),
                     "eval_s": round(time.perf_counter() - trained, 1), "data_s": round(data_seconds, 1),
                     "final_loss": _last_losses(run_dir)})  # fmt: skip
        _write(out, cfg, rows)
    return rows


def _last_losses(run_dir: Path) -> dict[str, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    return {k: round(last[k], 4) for k in ("loss", "lm_loss", "mask_loss", "recon_loss", "latent_loss")}


def _write(out: Path, cfg: BenchConfig, rows: list[dict[str, Any]]) -> None:
    (out / "results.json").write_text(json.dumps({"config": asdict(cfg), "rows": rows}, indent=1, default=str))


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The README table: one line per variant, metrics x100."""
    header = ("| variant | DL-RES cIoU | DL-RES gIoU | DLC attribute acc. | ROC acc. | RES cIoU | train s | eval s |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    lines = [header]
    for r in rows:
        res = "n/a" if r["res_ciou"] is None else f"{100 * r['res_ciou']:.1f}"
        lines.append(f"| {r['variant']} | {100 * r['dlres_ciou']:.1f} | {100 * r['dlres_giou']:.1f} | "
                     f"{100 * r['dlc_attribute_accuracy']:.1f} | {100 * r['roc_accuracy']:.1f} | {res} | "
                     f"{r['train_s']:.0f} | {r['eval_s']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Working directory (data, shards, runs, results).")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--max-steps", type=int, help="Training steps per variant (default: the config's).")
    parser.add_argument("--seed", type=int, default=0, help="Data and training seed.")
    parser.add_argument("--smoke", action="store_true", help="A few steps on a few scenes (tests).")
    args = parser.parse_args(argv)
    cfg = smoke_config() if args.smoke else BenchConfig()
    cfg = replace(cfg, seed=args.seed, max_steps=args.max_steps or cfg.max_steps)
    rows = run(args.out, cfg, args.variants)
    print(format_rows(rows))
    return rows


if __name__ == "__main__":
    main()
