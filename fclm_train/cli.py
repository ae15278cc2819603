"""``fclm-train``: train FCLM from shards (one command; thin -- everything happens in ``fclm_train.train``).

    fclm-train --shards 'shards/stage2/shard-{000000..000703}.tar' --stage 2 --model 3b \\
        --llm /ckpt/Qwen2.5-VL-3B-Instruct --sam /ckpt/sam_vit_h_4b8939.pth --out runs/stage2
    torchrun --nproc_per_node 8 -m fclm_train.cli --recipe recipes/train/stage1.yaml --out runs/stage1
    fclm-train --recipe recipes/train/stage1.yaml --resume runs/stage1     # continue from the latest checkpoint

Precedence: TrainConfig defaults < ``--recipe`` YAML < options given on the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False, add_completion=False)

#: option name -> (section of TrainConfig or None for the top level, field)
_FIELDS = {
    "stage": (None, "stage"), "model": (None, "model"), "llm": (None, "llm_path"), "sam": (None, "sam_path"),
    "out": (None, "out_dir"), "init": (None, "init_from"), "global_batch_size": (None, "global_batch_size"),
    "epochs": (None, "epochs"), "max_steps": (None, "max_steps"), "seed": (None, "seed"),
    "precision": (None, "precision"),
    "gradient_checkpointing": (None, "gradient_checkpointing"), "distributed": (None, "distributed"),
    "log_every": (None, "log_every"), "save_every": (None, "save_every"), "keep_last": (None, "keep_last"),
    "save_dtype": (None, "save_dtype"), "tensorboard": (None, "tensorboard"),
    "lr": ("optim", "lr"), "weight_decay": ("optim", "weight_decay"), "warmup_ratio": ("optim", "warmup_ratio"),
    "grad_clip": ("optim", "grad_clip"), "micro_batch_size": ("data", "micro_batch_size"),
    "batch_unit": ("data", "batch_unit"), "num_workers": ("data", "num_workers"),
    "shuffle_buffer": ("data", "shuffle_buffer"), "max_length": ("data", "max_length"),
    "max_skip_fraction": ("data", "max_skip_fraction"),
}  # fmt: skip


@app.command()
def main(
    shards: Annotated[Optional[list[str]], typer.Option(help="Shard set: brace pattern or build directory, optional ':WEIGHT'. Repeat to mix sets.")] = None,
    recipe: Annotated[Optional[Path], typer.Option(help="Train recipe YAML (TrainConfig fields, data.shards with weights).")] = None,
    stage: Annotated[Optional[int], typer.Option(help="1: all modules (paper lr 2e-5, global batch 32); 2: the LLM only (lr 1e-5, batch 16). [default: 1]")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model preset: tiny | 3b | 7b. [default: 3b]")] = None,
    llm: Annotated[Optional[Path], typer.Option(help="Local Qwen2.5-VL-3B/7B-Instruct directory (weights + tokenizer).")] = None,
    sam: Annotated[Optional[Path], typer.Option(help="SAM checkpoint, e.g. sam_vit_h_4b8939.pth.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output directory: checkpoints, metrics.jsonl, tensorboard/. [default: runs/fclm]")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue a run exactly: a checkpoint step directory, or a run directory (its latest).")] = None,
    init: Annotated[Optional[Path], typer.Option(help="Start from a checkpoint's weights only (stage 2 from stage 1); fresh optimizer and data order.")] = None,
    global_batch_size: Annotated[Optional[int], typer.Option(help="Samples per optimizer step over all ranks. [default: paper, per stage]")] = None,
    micro_batch_size: Annotated[Optional[int], typer.Option(help="Samples per rank per forward (paper stage 2: 2). [default: 2]")] = None,
    batch_unit: Annotated[Optional[str], typer.Option(help="sample (a paired DLC + DL-RES sample counts once) | row. [default: sample]")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate. [default: paper, per stage]")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="AdamW weight decay. [default: 0.0]")] = None,
    warmup_ratio: Annotated[Optional[float], typer.Option(help="Warmup fraction of the steps, then cosine. [default: 0.03]")] = None,
    grad_clip: Annotated[Optional[float], typer.Option(help="Gradient-norm clipping. [default: 1.0]")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Passes over the shard sets' samples. [default: 1]")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Optimizer steps (overrides --epochs).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seeds init, shard order, mixing, shuffling. [default: 0]")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32.")] = None,
    gradient_checkpointing: Annotated[Optional[bool], typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Activation checkpointing in the LLM. [default: on]")] = None,
    distributed: Annotated[Optional[str], typer.Option(help="ddp | fsdp (FSDP2 fully_shard) under torchrun. [default: ddp]")] = None,
    num_workers: Annotated[Optional[int], typer.Option(help="Loader worker processes per rank. [default: 2]")] = None,
    shuffle_buffer: Annotated[Optional[int], typer.Option(help="Raw samples in each worker's shuffle buffer. [default: 1000]")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Longest sequence in tokens; longer samples are skipped and counted (paper: 4096).")] = None,
    max_skip_fraction: Annotated[Optional[float], typer.Option(help="Stop when more than this fraction of the samples read is lost or skipped (bad shards, undecodable samples). [default: 0.01]")] = None,
    log_every: Annotated[Optional[int], typer.Option(help="Steps between log lines. [default: 1]")] = None,
    save_every: Annotated[Optional[int], typer.Option(help="Steps between checkpoints (one is always saved at the end). [default: 500]")] = None,
    keep_last: Annotated[Optional[int], typer.Option(help="Checkpoints to keep (0: all). [default: 3]")] = None,
    save_dtype: Annotated[Optional[str], typer.Option(help="float32 (exact resume) | bfloat16 (half the size).")] = None,
    tensorboard: Annotated[Optional[bool], typer.Option("--tensorboard/--no-tensorboard", help="Write OUT/tensorboard if tensorboard is installed. [default: on]")] = None,
) -> None:
    """Train FCLM (stage 1 or 2) from fclm-data shards; single process or under torchrun (DDP / FSDP2)."""
    from .config import TrainConfig, load_recipe
    from .train import Trainer

    options = {k: v for k, v in locals().items() if k in _FIELDS and v is not None}
    body = load_recipe(recipe) if recipe else {}
    if shards:
        body.setdefault("data", {})["shards"] = list(shards)
    for name, value in options.items():
        section, field = _FIELDS[name]
        target = body if section is None else body.setdefault(section, {})
        target[field] = str(value) if isinstance(value, Path) else value
    if body.get("keep_last") == 0:
        body["keep_last"] = None
    try:
        cfg = TrainConfig.from_dict(body)
    except (TypeError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    from .data.shards import ShardError

    try:
        Trainer(cfg, resume=resume).run()
    except ShardError as exc:  # unreadable shards, rotten data: one line, no traceback
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


if __name__ == "__main__":  # ``torchrun -m fclm_train.cli ...``
    app()
