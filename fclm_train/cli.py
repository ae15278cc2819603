"""``fclm-train``: train FCLM from shards (thin: everything happens in ``fclm_train.train``).

    fclm-train --shards 'shards/stage2/shard-{000000..000703}.tar' --stage 2 --model 3b \\
        --llm /ckpt/Qwen2.5-VL-3B-Instruct --sam /ckpt/sam_vit_h_4b8939.pth --out runs/stage2
    torchrun --nproc_per_node 8 -m fclm_train.cli --recipe recipes/train/stage1.yaml --out runs/stage1
    fclm-train --resume runs/stage1                       # continue with the run's saved config
    fclm-train --resume runs/stage1 --max-steps 20000     # ... and extend it (the schedule is re-planned)
    fclm-train --recipe recipes/train/stage1.yaml --set optim.lr=1e-5 --dry-run   # the config and the plan
    fclm-train plot runs/stage1                           # loss parts, lr, throughput -> runs/stage1/curves.png

Precedence: TrainConfig defaults < the resumed run's saved config < ``--recipe`` < options and ``--set``.
The options are generated from the config dataclasses (``fclm_train/config.py``): one per field, its help the
field's comment, its default the field's default; ``--set section.field=value`` reaches every field, nested
model overrides included (``--set model_overrides.loss.dice_weight=1.0``).

A user's mistake (missing shards, unknown preset, a batch that does not divide, ``--out`` naming a file, a resume
that changes the data order) ends with exit status 2 and one line, before torch is imported where possible.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

import typer

from .config import (
    PREEMPTED_EXIT_CODE,
    STAGE_DEFAULTS,
    ConfigError,
    FieldInfo,
    TrainConfig,
    deep_merge,
    leaf_fields,
    load_recipe,
    set_override,
)  # fmt: skip

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False, add_completion=False,
                  context_settings={"help_option_names": ["-h", "--help"]})  # fmt: skip

#: fields whose option is not ``--<field name>``
_ALIASES = {"llm_path": "llm", "sam_path": "sam", "out_dir": "out", "init_from": "init", "data.shards": "shards"}
#: fields only ``--set`` reaches (a mapping, a pair)
_SET_ONLY = ("model_overrides", "optim.betas")


def _flag(info: FieldInfo) -> str:
    if info.path in _ALIASES:
        return _ALIASES[info.path]
    section, _, name = info.path.rpartition(".")
    return (f"{section}-{name}" if section == "val" else name).replace("_", "-")


def _option_type(hint: Any) -> tuple[Any, list[str]]:
    """(typer type, choices) for a field annotation."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union or type(hint).__name__ == "UnionType":
        (inner,) = [a for a in args if a is not type(None)]
        return _option_type(inner)
    if origin is Literal:
        return str, [str(a) for a in args]
    if origin is list:
        return list[str], []
    return hint, []


def _default_text(info: FieldInfo) -> str:
    if info.path in ("optim.lr", "global_batch_size"):
        key = "lr" if info.path == "optim.lr" else "global_batch_size"
        return " / ".join(f"{getattr(d, key):g} (stage {s})" for s, d in STAGE_DEFAULTS.items())
    if isinstance(info.default, list):
        return ", ".join(map(str, info.default)) or "none"
    return "none" if info.default is None else str(info.default)


def _options() -> dict[str, tuple[FieldInfo, inspect.Parameter]]:
    """Python parameter name -> (field, the typer parameter), one per settable leaf field."""
    options = {}
    for info in leaf_fields():
        if info.path in _SET_ONLY:
            continue
        flag = _flag(info)
        kind, choices = _option_type(info.hint)
        doc = info.doc + (f" ({' | '.join(choices)})" if choices else "")
        decls = [f"--{flag}/--no-{flag}"] if kind is bool else [f"--{flag}"]
        name = flag.replace("-", "_")
        option = typer.Option(*decls, help=doc, show_default=_default_text(info))
        annotation = Annotated[Optional[kind], option]
        options[name] = (info, inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                                 annotation=annotation))  # fmt: skip
    return options


_OPTIONS = _options()

_FIXED = {
    "recipe": Annotated[Optional[Path], typer.Option(help="Train recipe YAML (TrainConfig fields as nested YAML).")],
    "resume": Annotated[Optional[Path], typer.Option(help="Continue a run: its directory (latest checkpoint) or a step directory. Alone, it continues with the run's saved config; options given override only what they name.")],
    "allow_inexact_resume": Annotated[bool, typer.Option("--allow-inexact-resume", help="Accept a resume that changes world size, workers, shards, seed or batch (the data order then continues statistically, not exactly).")],
    "set": Annotated[Optional[list[str]], typer.Option("--set", help="Override any field: section.field=value (YAML value), e.g. --set optim.lr=1e-5 --set model_overrides.loss.dice_weight=1. Repeatable.")],
    "print_config": Annotated[bool, typer.Option("--print-config", help="Print the resolved config (defaults + resumed run + recipe + options) as YAML and exit.")],
    "dry_run": Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and the plan (steps, samples, shards per rank / worker) and exit.")],
}  # fmt: skip
_FIXED_DEFAULTS = {"allow_inexact_resume": False, "print_config": False, "dry_run": False}


def fail(message: str) -> typer.Exit:
    """One line on stderr (rank 0 only under torchrun), exit status 2."""
    if os.environ.get("RANK", "0") == "0":
        typer.echo(f"fclm-train: error: {message}", err=True)
    return typer.Exit(2)


def resolve_config(recipe: Path | None, resume: Path | None, flags: dict[str, Any],
                   sets: list[str]) -> tuple[TrainConfig, Path | None]:  # fmt: skip
    """defaults < saved run < recipe < options < --set -> (config, the checkpoint to resume from)."""
    from .rundir import SavedRun, resolve_checkpoint

    body: dict[str, Any] = {}
    step_dir = None
    if resume is not None:
        step_dir = resolve_checkpoint(resume)
        body = SavedRun.read(step_dir).train_config
        body["out_dir"] = str(step_dir.parent)  # the run continues where it is, whatever the saved cwd was
    if recipe is not None:
        body = deep_merge(body, load_recipe(recipe))
    for name, value in flags.items():
        info = _OPTIONS[name][0]
        value = str(value) if isinstance(value, Path) else value
        if info.path.endswith("shards"):
            value = list(value)
        nested: Any = value
        for part in reversed(info.path.split(".")):
            nested = {part: nested}
        body = deep_merge(body, nested)
    for assignment in sets:
        body = set_override(body, assignment)
    return TrainConfig.from_dict(body), step_dir


def preflight(cfg: TrainConfig, step_dir: Path | None, allow_inexact: bool):
    """The checks that need no torch: output directory, shards, batch arithmetic, resume exactness; the plan."""
    from .data.shards import require_format, resolve_shard_set
    from .plan import plan_run
    from .rundir import SavedRun, has_checkpoint

    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a directory")
    if step_dir is None and has_checkpoint(out):
        raise ConfigError(f"--out {out}: already holds a run; continue it with --resume {out} or choose another --out")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cfg.accumulation(world)
    if "wandb" in cfg.reporters and importlib.util.find_spec("wandb") is None:
        raise ConfigError("--report-to wandb: wandb is not installed (pip install 'fclm[wandb]')")
    if not cfg.data.shards:
        raise ConfigError("--shards: no shards given (pass --shards PATTERN[:WEIGHT] or data.shards in a recipe)")
    for s in cfg.data.shards + cfg.val.shards:
        _check_local(s.pattern, "--shards" if s in cfg.data.shards else "--val-shards")
    sets = [resolve_shard_set(s.pattern, s.weight, s.name) for s in cfg.data.shards]
    for spec, shard_set in zip(cfg.data.shards, sets):  # REF-VLM / MVP-LM builds are other models' inputs
        require_format(shard_set, "fclm", "fclm-train (the FCLM model)", f"--shards {spec.pattern}")
    for s in cfg.val.shards:
        require_format(resolve_shard_set(s.pattern, s.weight, s.name), "fclm", "fclm-train (the FCLM model)",
                       f"--val-shards {s.pattern}")  # fmt: skip
    warmup = None
    if step_dir is not None:
        saved = SavedRun.read(step_dir)
        saved.check(cfg.to_dict(), world, allow_inexact)
        warmup = saved.trainer_state.get("warmup_steps")
    return plan_run(cfg, world, sets, warmup)


def _check_local(pattern: str, option: str) -> None:
    """A local pattern's directory must exist (checked before the brace expansion, which imports webdataset)."""
    if "://" in pattern or pattern.startswith("pipe:"):
        return
    path = Path(pattern.split("{", 1)[0]) if "{" in pattern else Path(pattern)
    if "{" in pattern and not pattern.split("{", 1)[0].endswith("/"):
        path = path.parent
    if not path.exists():
        raise ConfigError(f"{option} {pattern}: {path} does not exist")


@app.callback(invoke_without_command=True)
def train(ctx: typer.Context, **kwargs: Any) -> None:
    """Train FCLM (stage 1 or 2) from fclm-data shards; single process or under torchrun (DDP / FSDP2).

    Every option below is a field of the train config (fclm_train/config.py); --set reaches the rest.
    SIGTERM / SIGUSR1 save a checkpoint at the next step boundary and exit with status 75 (resume with --resume).
    """
    if ctx.invoked_subcommand is not None:
        return
    flags = {k: v for k, v in kwargs.items() if k in _OPTIONS and v is not None}
    try:
        cfg, step_dir = resolve_config(kwargs["recipe"], kwargs["resume"], flags, kwargs["set"] or [])
        if kwargs["print_config"]:
            typer.echo(cfg.to_yaml(), nl=False)
            return
        plan = preflight(cfg, step_dir, kwargs["allow_inexact_resume"])
        if kwargs["dry_run"]:
            typer.echo(cfg.to_yaml() + "---\n" + plan.describe())
            return
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    from .data.shards import ShardError
    from .train import Trainer

    trainer = Trainer(cfg, resume=step_dir, allow_inexact_resume=kwargs["allow_inexact_resume"])
    try:
        trainer.run()
    except (ConfigError, FileNotFoundError, ShardError) as exc:  # unreadable shards, rotten data: one line
        raise fail(str(exc)) from None
    if trainer.status == "preempted":
        raise typer.Exit(PREEMPTED_EXIT_CODE)


def _install_signature() -> None:
    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=_FIXED_DEFAULTS.get(name),
                                 annotation=annotation) for name, annotation in _FIXED.items()]  # fmt: skip
    params += [param for _, param in _OPTIONS.values()]
    train.__signature__ = inspect.Signature(params)
    train.__annotations__ = {p.name: p.annotation for p in params}


_install_signature()


@app.command()
def plot(
    run: Annotated[Path, typer.Argument(help="A fclm-train output directory (its metrics.jsonl / val.jsonl).")],
    out: Annotated[Optional[Path], typer.Option(help="PNG to write. [default: RUN/curves.png]")] = None,
) -> None:
    """Draw a run's loss parts, learning rate and throughput (and validation losses) into a PNG."""
    from .metrics import plot_run

    try:
        _, path = plot_run(run, out)
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None
    typer.echo(json.dumps({"png": str(path)}))


def main() -> None:
    app()


if __name__ == "__main__":  # ``torchrun -m fclm_train.cli ...``
    app()
