"""Checkpoints: save (atomically), find the latest, resume, and load a trained model back for use.

Layout of ``OUT/step-000123/`` (CHECKPOINT format; ``trainer_state.json`` carries ``format``)::

    model.safetensors     every weight of FCLMModel (HF-style names: qwen.model.language_model.layers.0...,
                          sam_encoder..., region_extractor..., mask_decoder...); tied weights once, the aliases in
                          the file's metadata
    config.json           the FCLMConfig (architecture + FCLM token ids), what build_fclm needs
    train_config.json     the TrainConfig of the run
    tokenizer files       when the tokenizer is a transformers one (--llm PATH); else trainer_state names it
    optimizer.pt          AdamW state (full, unsharded)
    scheduler.pt          LR scheduler state
    loader.json           per rank: batches consumed, raw samples consumed per worker, skip counts
    rng.pt                per rank: torch / CUDA / python / numpy generator states
    trainer_state.json    step, epoch, samples seen, non-finite steps skipped, tokenizer kind, the planned total
                          and warmup steps and the world size (what a resume re-plans and checks against)

Writes go to ``OUT/.tmp-step-000123`` and are renamed into place only when complete, then ``OUT/latest`` (a
text file) is replaced; an interrupted save leaves the previous checkpoint intact. With FSDP2 the full state is
gathered to rank 0 (``torch.distributed.checkpoint.state_dict`` with ``full_state_dict``); every rank writes
nothing itself, so multi-node runs need ``OUT`` on a shared filesystem only for reading on resume.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)  # fmt: skip

from . import distributed as D
from .rundir import resolve_checkpoint, step_dir_name  # noqa: F401  (re-exported)

CHECKPOINT_FORMAT = 1
MODEL_FILE = "model.safetensors"


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """Parameter name -> the first name of the same tensor (tied embeddings), for all but the first names."""
    first: dict[int, str] = {}
    aliases = {}
    for name, param in D.unwrap(model).named_parameters(remove_duplicate=False):
        if id(param) in first:
            aliases[name] = first[id(param)]
        else:
            first[id(param)] = name
    return aliases


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    out_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, loader_state: dict,
    trainer_state: dict, model_config: dict, train_config: dict, tokenizer, info: D.DistInfo,
    save_dtype: torch.dtype = torch.float32, keep_last: int | None = None,
) -> Path:  # fmt: skip
    """Collective: every rank calls it; rank 0 writes. Returns the step directory."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    optim_state = get_optimizer_state_dict(model, optimizer, options=options)
    loader_states = D.all_gather_objects(loader_state)
    rng_states = D.all_gather_objects(rng_state())
    final = out_dir / step_dir_name(step)
    if info.is_main:
        tmp = out_dir / f".tmp-{step_dir_name(step)}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        aliases = tied_aliases(model)
        _save_model_file(tmp / MODEL_FILE, model_state, aliases, save_dtype)
        _write_json(tmp / "config.json", model_config)
        _write_json(tmp / "train_config.json", train_config)
        tokenizer_kind = _save_tokenizer(tokenizer, tmp)
        torch.save(optim_state, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        _write_json(tmp / "loader.json", {"ranks": loader_states})
        torch.save({"ranks": rng_states}, tmp / "rng.pt")
        _write_json(tmp / "trainer_state.json", {**trainer_state, "format": CHECKPOINT_FORMAT,
                                                 "tokenizer": tokenizer_kind})  # fmt: skip
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _write_latest(out_dir, final.name)
        _prune(out_dir, keep_last)
    D.barrier()
    return final


def _save_model_file(path: Path, state: dict[str, torch.Tensor], aliases: dict[str, str], dtype: torch.dtype) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for name, tensor in state.items():
        if name in aliases:
            continue
        tensor = tensor.detach()
        if tensor.is_floating_point() and tensor.dtype != dtype:
            tensor = tensor.to(dtype)
        tensors[name] = tensor.contiguous()
    save_file(tensors, str(path), metadata={"format": "pt", "fclm_aliases": json.dumps(aliases)})


def load_model_state(path: Path) -> dict[str, torch.Tensor]:
    """``model.safetensors`` -> the full state dict (aliases of tied weights filled in)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    state = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        aliases = json.loads((handle.metadata() or {}).get("fclm_aliases", "{}"))
    for alias, name in aliases.items():
        state[alias] = state[name]
    return state


def _save_tokenizer(tokenizer, directory: Path) -> str:
    """'files' when a transformers tokenizer was saved, else the kind to rebuild ('tiny' / 'offline_qwen')."""
    from .data.tokenizer import OfflineQwenTokenizer, save_tokenizer, tiny_tokenizer

    if isinstance(tokenizer, OfflineQwenTokenizer):
        return "offline_qwen"
    # the byte-level test tokenizer is rebuilt exactly from code; any other small vocabulary is saved as files
    if len(tokenizer) < 1000 and tokenizer.get_vocab() == tiny_tokenizer().get_vocab():
        return "tiny"
    if not save_tokenizer(tokenizer, directory):
        raise TypeError(f"{type(tokenizer).__name__} cannot be saved with the checkpoint (no save_pretrained)")
    return "files"


def _write_json(path: Path, body: Any) -> None:
    path.write_text(json.dumps(body, indent=1, default=str) + "\n")


def _write_latest(out_dir: Path, name: str) -> None:
    tmp = out_dir / ".latest.tmp"
    tmp.write_text(name + "\n")
    os.replace(tmp, out_dir / "latest")


def _prune(out_dir: Path, keep_last: int | None) -> None:
    if not keep_last:
        return
    steps = sorted(p for p in out_dir.glob("step-*") if p.is_dir())
    for old in steps[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def load_training_state(
    step_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, info: D.DistInfo, fsdp: bool,
) -> tuple[dict, dict]:  # fmt: skip
    """Restore model, optimizer, scheduler and this rank's RNG; returns (trainer_state, this rank's loader state)."""
    state = load_model_state(step_dir / MODEL_FILE) if (info.is_main or not fsdp) else {}
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=fsdp, strict=True)
    set_model_state_dict(model, state, options=options)
    optim_state = torch.load(step_dir / "optimizer.pt", weights_only=False) if (info.is_main or not fsdp) else {}
    set_optimizer_state_dict(model, optimizer, optim_state, options=StateDictOptions(
        full_state_dict=True, broadcast_from_rank0=fsdp))  # fmt: skip
    scheduler.load_state_dict(torch.load(step_dir / "scheduler.pt", weights_only=False))
    rng = torch.load(step_dir / "rng.pt", weights_only=False)["ranks"]
    loader = json.loads((step_dir / "loader.json").read_text())["ranks"]
    if len(rng) == info.world_size:
        set_rng_state(rng[info.rank])
    trainer_state = json.loads((step_dir / "trainer_state.json").read_text())
    return trainer_state, loader[info.rank] if info.rank < len(loader) else loader[0]


def load_model(step_dir: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """A trained FCLMModel and its tokenizer from a checkpoint (no --llm / --sam needed: every weight is in it)."""
    from fclm_train.model import FCLMConfig, build_fclm

    from .data.tokenizer import load_model_tokenizer, offline_qwen_tokenizer, tiny_tokenizer

    step_dir = resolve_checkpoint(step_dir)
    cfg = FCLMConfig.from_dict(json.loads((step_dir / "config.json").read_text()))
    kind = json.loads((step_dir / "trainer_state.json").read_text())["tokenizer"]
    tokenizer = {"tiny": tiny_tokenizer, "offline_qwen": offline_qwen_tokenizer}.get(kind)
    tokenizer = tokenizer() if tokenizer else load_model_tokenizer(step_dir)
    model = build_fclm(cfg, tokenizer=tokenizer, dtype=dtype)
    model.load_state_dict(load_model_state(step_dir / MODEL_FILE), strict=True)
    return model.to(device=device).eval(), tokenizer
