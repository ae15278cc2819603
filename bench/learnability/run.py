"""Learnability benchmark: can FCLM's full path learn synthetic scenes on a CPU, and do the paper's ablations
point the paper's way?

    python -m bench.learnability.run --out runs/learnability                 # every experiment, 3 reported seeds
    python -m bench.learnability.run --out runs/l --reduced                  # the reduced-step version (~35 min)
    python -m bench.learnability.run --out runs/l --experiments full stage2_no_latent --seeds 2
    python -m bench.learnability.run --out /tmp/l --smoke --experiments full # a few steps: the path runs end to end

Per seed, in order (wall time of each run in the results):

1. **generate** -- train and held-out data roots (``generate.py``: Describe-Anything, RefCOCO, PACO-LVIS layouts);
2. **build** -- ``fclm-data``'s builder: stage 1 (dam_sam + refcoco train + paco_lvis), stage 2 (dam_sam +
   refcoco train with ``pair: true``: the paper's stage 2 plus grounding data, as Table 11), held-out (dam_sam +
   refcoco val);
3. **stage 1** -- ``fclm_train.train.Trainer`` from scratch, every module but SAM's frozen encoder, the
   ``learnability`` model config (:data:`LEARNABILITY_MODEL`) with the experiment's architecture; one run per
   distinct (architecture, stage-1 consistency) of the chosen experiments (``experiments.py``);
4. **stage 2** -- from the stage-1 run (``init_from``), the LLM only (extractor and decoder frozen), at half
   the stage-1 learning rate (the paper's 2e-5 -> 1e-5), with the experiment's stage-2 consistency;
5. **evaluate** every run on held-out scenes with the predictor (greedy generation, the model must emit ``[SEG]``):
   DL-RES cIoU / gIoU (``SegmentationTask`` on the DL-RES views), DLC attribute accuracy (the caption of each
   held-out region states its colour / shape / size / texture: ``attributes.py``), ROC accuracy (the exact shape
   label for the same regions), and RES cIoU on RefCOCO-format val scenes;
6. **summarize** -- mean ± sd over the seeds per (stage, experiment) and, per paper direction, the per-seed
   differences (``results.json``, ``summary.md``).

Seeds: :data:`REPORTED_SEEDS` are reported; :data:`VALIDATION_SEEDS` (0 and 1, which earlier sessions used to
fix the configuration: lr, batch, steps) are kept apart and need ``--validation``. Nothing is tuned on the held-out
scenes. A finished run (its ``eval.json``) is reused when the command is repeated, so an interrupted benchmark
continues where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .attributes import SCORED, attribute_hits
from .experiments import (
    ARCHITECTURES,
    CONSISTENCY,
    EXPERIMENTS,
    directions,
    format_directions,
    format_summary,
    stage1_runs,
    summarize,
)  # fmt: skip
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
#: reported seeds; the validation seeds were used to choose the configuration and are never reported with them
REPORTED_SEEDS = (2, 3, 4)
VALIDATION_SEEDS = (0, 1)


@dataclass
class BenchConfig:
    train_sizes: SplitSize = field(default_factory=lambda: SplitSize(dam=600, refcoco=600, paco=300))
    heldout_sizes: SplitSize = field(default_factory=lambda: SplitSize(dam=60, refcoco=40, paco=0))
    difficulty: Difficulty = field(default_factory=Difficulty)
    model: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(LEARNABILITY_MODEL)))
    #: stage 1 + stage 2 = ~10 CPU-minutes of training on 2 cores (1,800 stage-1 steps took 595 s; a stage-2
    #: step, LLM only, costs about as much: the backward still runs through the frozen decoder and extractor
    #: outputs reach the LLM)
    max_steps: int = 1200
    stage2_steps: int = 600
    micro_batch_size: int = 4  #: samples per step (a DLC + DL-RES pair counts once)
    lr: float = 2e-3
    stage2_lr: float = 1e-3  #: paper §S1.1: stage 2 at half the stage-1 rate (1e-5 vs 2e-5)
    num_workers: int = 1
    #: intra-op threads. 1: on a loaded 2-core machine two threads thrash (a step measured 16 s with 2 threads
    #: against 0.5-0.7 s with 1, load average 9.5); on an idle machine 2 threads are at most ~1.3x faster.
    threads: int = 1
    eval_batch_size: int = 16
    eval_limit: int | None = None  #: held-out samples per task (None: all)
    max_new_tokens: int = 200  #: a caption is ~30 word tokens (~140 with the byte tokenizer)
    #: no system turn: Qwen's default one is 9 words that every row would repeat
    system_prompt: str | None = None
    #: "words": the BPE fitted to the scenes' language (``tokenizer.py``); "bytes": the tiny preset's tokenizer
    tokenizer: str = "words"
    seed: int = 0
    label: str = "full"  #: "full", "reduced" or "smoke": printed with every table
    eval_stage1: bool = True  #: evaluate the stage-1 runs too (their own rows, stage 1 in the table)
    #: DL-RES / RES masks: "generate" (the model must emit [SEG] itself) or "forced" (the reference answer is
    #: teacher-forced, LISA's validate: measures the mask path before the model has learnt to emit [SEG])
    seg_mode: str = "generate"


def reduced_config() -> BenchConfig:
    """What fits a ~35-minute budget on a shared 2-core machine: every experiment x 3 seeds at a few % of the steps.

    Too short to learn the visual attributes (the full benchmark's curve is still rising at 1,800 steps): it shows
    the path and the table, not the paper's effects.
    """
    return BenchConfig(train_sizes=SplitSize(dam=120, refcoco=80, paco=40), heldout_sizes=SplitSize(dam=24, refcoco=16, paco=0),
                       max_steps=30, stage2_steps=15, eval_limit=24, max_new_tokens=40, label="reduced",
                       eval_stage1=False, seg_mode="forced")  # fmt: skip


def smoke_config() -> BenchConfig:
    """A few steps on a few scenes: proves the path runs and reports, says nothing about learning."""
    return BenchConfig(train_sizes=SplitSize(dam=6, refcoco=4, paco=4), heldout_sizes=SplitSize(dam=3, refcoco=2, paco=0),
                       max_steps=2, stage2_steps=2, micro_batch_size=2, num_workers=0, eval_limit=4,
                       max_new_tokens=4, label="smoke")  # fmt: skip


# --------------------------------------------------------------------------------------------- stages
def prepare_data(out: Path, cfg: BenchConfig) -> dict[str, Path]:
    """Generate both splits and build the stage-1, stage-2 and held-out shards; returns their directories."""
    from fclm_data.build.run import BuildConfig, run_build
    from fclm_data.recipes import parse_recipe

    roots = {split: generate_split(out / "data" / split, split, sizes, cfg.difficulty, cfg.seed)
             for split, sizes in (("train", cfg.train_sizes), ("heldout", cfg.heldout_sizes))}  # fmt: skip
    entries = ((cfg.train_sizes.dam, {"source": "dam_sam"}),
               (cfg.train_sizes.refcoco, {"source": "refcoco", "options": {"split": "train"}}),
               (cfg.train_sizes.paco, {"source": "paco_lvis", "options": {"split": "train"}}))  # fmt: skip
    stage1 = [entry for size, entry in entries if size]
    stage2 = [{"source": "dam_sam"}, {"source": "refcoco", "options": {"split": "train", "pair": True}}]
    heldout = [{"source": "dam_sam"}, {"source": "refcoco", "options": {"split": "val"}}]
    shards = {}
    for split, root, sources in (("stage1", "train", stage1), ("stage2", "train", stage2),
                                 ("heldout", "heldout", heldout)):  # fmt: skip
        recipe = parse_recipe({"name": f"learnability_{split}", "seed": cfg.seed, "shard_size": 64, "sources": sources})
        shards[split] = out / "shards" / split
        run_build(recipe, BuildConfig(data_root=roots[root], out_dir=shards[split], overwrite=True))
    return shards


def prepare_llm(out: Path, cfg: BenchConfig) -> tuple[Path | None, dict[str, Any]]:
    """(``--llm`` directory or None, model overrides): the word tokenizer needs a Qwen directory to travel in."""
    if cfg.tokenizer == "bytes":
        return None, cfg.model
    from .tokenizer import write_llm_dir

    return out / "llm", write_llm_dir(out / "llm", cfg.model, cfg.seed)


def train_stage(out: Path, shards: Path, cfg: BenchConfig, stage: int, overrides: dict[str, Any], llm: Path | None,
                init: Path | None = None) -> Path:  # fmt: skip
    """One training run (stage 1 from scratch, stage 2 from ``init``); returns the run directory."""
    from fclm_train.config import TrainConfig
    from fclm_train.train import Trainer

    steps, lr = (cfg.max_steps, cfg.lr) if stage == 1 else (cfg.stage2_steps, cfg.stage2_lr)
    body = {
        "model": "tiny", "stage": stage, "out_dir": str(out), "max_steps": steps, "seed": cfg.seed,
        "llm_path": None if llm is None else str(llm), "init_from": None if init is None else str(init),
        "global_batch_size": cfg.micro_batch_size, "gradient_checkpointing": False, "tensorboard": False,
        "save_every": steps, "keep_last": 1, "log_every": max(1, steps // 20),
        "model_overrides": overrides,
        "optim": {"lr": lr},
        "data": {"shards": [str(shards)], "micro_batch_size": cfg.micro_batch_size,
                 "num_workers": cfg.num_workers, "shuffle_buffer": 256, "system_prompt": cfg.system_prompt},
    }  # fmt: skip
    return Trainer(TrainConfig.from_dict(body)).run()


def model_overrides(base: dict[str, Any], architecture: str, level: str) -> dict[str, Any]:
    """The learnability model with an architecture's switches and a consistency level's loss weights."""
    from fclm_train.config import deep_merge

    merged = deep_merge(base, ARCHITECTURES[architecture])
    return deep_merge(merged, {"loss": CONSISTENCY[level]})


def evaluate_heldout(predictor, heldout_shards: Path, cfg: BenchConfig) -> dict[str, Any]:
    """DL-RES / RES cIoU, DLC attribute accuracy and ROC accuracy on the held-out scenes."""
    from fclm_train.eval.run import batched, evaluate, iter_samples, view_query
    from fclm_train.eval.tasks.res import SegmentationTask

    seg = evaluate(predictor, SegmentationTask(cfg.seg_mode), [str(heldout_shards)], cfg.eval_limit, cfg.eval_batch_size)
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


def run_seed(out: Path, cfg: BenchConfig, names: list[str], log) -> list[dict[str, Any]]:
    """Every chosen experiment on one seed: shared stage-1 runs, then one stage-2 run each; one row per run."""
    from fclm_train.infer import GenerationConfig, Predictor

    started = time.perf_counter()
    shards = prepare_data(out, cfg)
    llm, base = prepare_llm(out, cfg)
    data_s = round(time.perf_counter() - started, 1)
    log(f"seed {cfg.seed}: data ready in {data_s:.0f} s")
    generation = GenerationConfig(max_new_tokens=cfg.max_new_tokens)

    def one(stage: int, name: str, overrides: dict[str, Any], init: Path | None) -> tuple[Path, dict[str, Any] | None]:
        run_dir = out / f"stage{stage}" / name
        done = run_dir / "eval.json"
        if done.exists():
            row = json.loads(done.read_text())
            return run_dir, row.get("dlres_ciou") is not None and row or None
        shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run starts afresh
        began = time.perf_counter()
        train_stage(run_dir, shards[f"stage{stage}"], cfg, stage, overrides, llm, init)
        trained = time.perf_counter()
        if stage == 1 and not cfg.eval_stage1:
            done.write_text(json.dumps({"train_s": round(trained - began, 1)}))
            log(f"seed {cfg.seed} stage 1 {name}: trained in {trained - began:.0f} s (not evaluated)")
            return run_dir, None
        metrics = evaluate_heldout(Predictor.from_checkpoint(run_dir, generation=generation), shards["heldout"], cfg)
        row = {"seed": cfg.seed, "stage": stage, "experiment": name, **metrics, "train_s": round(trained - began, 1),
               "eval_s": round(time.perf_counter() - trained, 1), "data_s": data_s,
               "final_loss": _last_losses(run_dir)}  # fmt: skip
        done.write_text(json.dumps(row, indent=1))
        log(f"seed {cfg.seed} stage {stage} {name}: DL-RES cIoU {100 * row['dlres_ciou']:.1f}, DLC attr. "
            f"{100 * row['dlc_attribute_accuracy']:.1f} ({row['train_s']:.0f} s train, {row['eval_s']:.0f} s eval)")
        return run_dir, row

    rows, stage1 = [], {}
    for architecture, level in stage1_runs(names):
        name = f"{architecture}-{level}"
        stage1[name], row = one(1, name, model_overrides(base, architecture, level), None)
        rows += [row] if row else []
    for name in names:
        e = EXPERIMENTS[name]
        _, row = one(2, name, model_overrides(base, e.architecture, e.stage2), stage1[e.stage1_run])
        rows += [row] if row else []
    return rows


def run(out: Path, cfg: BenchConfig, names: list[str], seeds: list[int], log=print) -> dict[str, Any]:
    """The whole benchmark; writes ``out/results.json`` and ``out/summary.md``, returns the results."""
    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        with seed_lock(out / f"seed{seed}"):
            rows += run_seed(out / f"seed{seed}", replace(cfg, seed=seed), names, log)
        _write(out, cfg, names, seeds, rows)
    return _write(out, cfg, names, seeds, rows)


@contextlib.contextmanager
def seed_lock(seed_dir: Path):
    """Hold ``seed_dir/.lock`` while a seed runs: seeds may run in parallel processes (one per seed, the same
    ``--out``; then ``--summarize``), but two processes on one seed would regenerate its shards under each other
    and restart each other's unfinished runs (seen: a run directory deleted mid-training)."""
    seed_dir.mkdir(parents=True, exist_ok=True)
    with open(seed_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"{seed_dir}: another benchmark process is running this seed; run each seed in one "
                             "process (or wait for it), then --summarize") from None  # fmt: skip
        yield


def _last_losses(run_dir: Path) -> dict[str, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    return {k: round(last[k], 4) for k in ("loss", "lm_loss", "mask_loss", "recon_loss", "latent_loss")}


def _write(out: Path, cfg: BenchConfig, names: list[str], seeds: list[int], rows: list[dict[str, Any]]):
    summary, dirs = summarize(rows), directions(rows)
    results = {"label": cfg.label, "config": asdict(cfg), "experiments": names, "seeds": seeds, "rows": rows,
               "summary": summary, "directions": dirs}  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "summary.md").write_text(format_report(results) + "\n")
    return results


def format_report(results: dict[str, Any]) -> str:
    """Both tables with the run's label (a reduced or smoke run says so in its first line)."""
    cfg = results["config"]
    title = (f"Learnability benchmark ({results['label']}: stage 1 {cfg['max_steps']} steps, stage 2 "
             f"{cfg['stage2_steps']} steps of {cfg['micro_batch_size']} samples; [SEG] {cfg['seg_mode']}; seeds "
             f"{', '.join(map(str, results['seeds']))}; figures x 100, mean ± sd over seeds)")  # fmt: skip
    return "\n\n".join([title, format_summary(results["summary"]),
                         "Paper directions after stage 2 (difference of the per-seed figures; seeds agreeing):",
                         format_directions(results["directions"])])  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Working directory (data, shards, runs, results).")
    parser.add_argument("--experiments", nargs="+", choices=list(EXPERIMENTS), default=list(EXPERIMENTS))
    parser.add_argument("--seeds", nargs="+", type=int, help=f"Seeds (default: the reported {REPORTED_SEEDS}).")
    parser.add_argument("--validation", action="store_true", help=f"Run the validation seeds {VALIDATION_SEEDS}.")
    parser.add_argument("--max-steps", type=int, help="Stage-1 steps per run (default: the config's).")
    parser.add_argument("--stage2-steps", type=int, help="Stage-2 steps per run (default: the config's).")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--reduced", action="store_true", help="The reduced-step version (labelled so).")
    mode.add_argument("--smoke", action="store_true", help="A few steps on a few scenes (tests).")
    mode.add_argument("--summarize", action="store_true", help="Only rewrite the tables from OUT/results.json.")
    args = parser.parse_args(argv)
    if args.summarize:  # every finished run under OUT, also those of a seed still running
        results = json.loads((args.out / "results.json").read_text())
        rows = [json.loads(f.read_text()) for f in sorted(args.out.glob("seed*/stage*/*/eval.json"))]
        rows = [r for r in rows if r.get("dlres_ciou") is not None]
        results.update(rows=rows, seeds=sorted({r["seed"] for r in rows}), summary=summarize(rows),
                       directions=directions(rows))  # fmt: skip
        (args.out / "summary.md").write_text(format_report(results) + "\n")
        print(format_report(results))
        return results
    seeds = args.seeds or list(VALIDATION_SEEDS if args.validation else REPORTED_SEEDS)
    mixed = sorted(set(seeds) & set(VALIDATION_SEEDS))
    if mixed and not args.validation:
        parser.error(f"seeds {mixed} are validation seeds: pass --validation to run them (never reported)")
    cfg = smoke_config() if args.smoke else reduced_config() if args.reduced else BenchConfig()
    cfg = replace(cfg, max_steps=args.max_steps or cfg.max_steps, stage2_steps=args.stage2_steps or cfg.stage2_steps,
                  label=cfg.label + (" validation" if args.validation else ""))  # fmt: skip
    results = run(args.out, cfg, args.experiments, seeds)
    print(format_report(results))
    return results


if __name__ == "__main__":
    main()
