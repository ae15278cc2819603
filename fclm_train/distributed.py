"""torchrun process groups and the two wrappers: DDP, or FSDP2 (``fully_shard``) per transformer block.

``init()`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and picks NCCL on CUDA,
gloo on CPU; a plain ``python`` run is rank 0 of 1 without a process group. FSDP2 shards every Qwen decoder
layer, every Qwen ViT block and every frozen SAM encoder block as its own unit, then the root (the extractor,
the mask decoder and the embeddings); with bf16 on CUDA it computes in bf16 and reduces in fp32.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init(timeout_minutes: int = 30) -> DistInfo:
    """Join torchrun's process group (if any) and choose this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistInfo(rank, world_size, local_rank, device)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Mean of each scalar over ranks (logging only)."""
    if not dist.is_initialized() or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    tensor /= dist.get_world_size()
    return dict(zip(keys, tensor.tolist()))


def all_true(flag: bool, device: torch.device) -> bool:
    """True only if ``flag`` holds on every rank."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([0.0 if flag else 1.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() == 0.0)


def any_true(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` holds on any rank (a preemption signal seen by one rank stops all at the same step)."""
    return not all_true(not flag, device)


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks (validation counts)."""
    if not dist.is_initialized():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather_objects(obj):
    """Every rank's ``obj`` as a list (rank order); ``[obj]`` without a process group."""
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP over the trainable parameters (frozen ones are skipped by DDP itself)."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [info.local_rank] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def wrap_fsdp(model: nn.Module, bf16: bool) -> nn.Module:
    """FSDP2: one ``fully_shard`` unit per transformer block, then the root; in place, returns ``model``."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    kwargs = {"mp_policy": policy} if policy is not None else {}
    for block in _blocks(model):
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks: Qwen decoder layers, Qwen ViT blocks, SAM encoder blocks."""
    qwen = model.qwen.model
    return [*qwen.language_model.layers, *qwen.visual.blocks, *model.sam_encoder.encoder.blocks]


def unwrap(model: nn.Module) -> nn.Module:
    """The FCLMModel inside a DDP wrapper (FSDP2 modifies the module in place)."""
    return getattr(model, "module", model)
