"""Loading released weights into FCLM: the SAM ViT-H checkpoint key mapping.

``sam_vit_h_4b8939.pth`` is a flat state dict of segment-anything's ``Sam`` with three prefixes. FCLM splits
SAM across two modules (the frozen encoder in ``sam_encoder``, prompt encoder + decoder in ``mask_decoder``),
so each prefix maps onto one FCLM prefix. Loading is strict: any missing, unexpected or mis-shaped key raises
one error listing all of them (a truncated download or a ViT-B/L file for a ViT-H config fails loudly).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

#: checkpoint prefix -> FCLMModel prefix
SAM_KEY_MAP = {
    "image_encoder.": "sam_encoder.encoder.",
    "prompt_encoder.": "mask_decoder.prompt_encoder.",
    "mask_decoder.": "mask_decoder.decoder.",
}


def map_sam_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename checkpoint keys to FCLM names. Returns ``(mapped, keys with no known prefix)``."""
    mapped, unknown = {}, []
    for key, value in state.items():
        prefix = next((p for p in SAM_KEY_MAP if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
        else:
            mapped[SAM_KEY_MAP[prefix] + key[len(prefix) :]] = value
    return mapped, unknown


def sam_target_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The part of ``model.state_dict()`` that a SAM checkpoint must fill."""
    targets = tuple(SAM_KEY_MAP.values())
    return {k: v for k, v in model.state_dict().items() if k.startswith(targets)}


def load_sam_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Copy a SAM checkpoint (``.pth``) into ``model``'s SAM modules, strictly.

    Raises:
        ValueError: listing every missing, unexpected and shape-mismatched key.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "model" in state and isinstance(state["model"], dict):  # some re-saves wrap the state dict
        state = state["model"]
    mapped, unknown = map_sam_keys(state)
    target = sam_target_state(model)
    missing = sorted(set(target) - set(mapped))
    unexpected = sorted(set(mapped) - set(target)) + sorted(unknown)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(mapped[k].shape)} vs model {tuple(target[k].shape)}"
        for k in set(target) & set(mapped)
        if mapped[k].shape != target[k].shape
    )
    if missing or unexpected or mismatched:
        raise ValueError(
            f"SAM checkpoint {path} does not fit the configured SAM "
            f"(missing {len(missing)}, unexpected {len(unexpected)}, mismatched {len(mismatched)}):\n"
            + _listing("missing", missing) + _listing("unexpected", unexpected) + _listing("mismatched", mismatched)
        )  # fmt: skip
    model.load_state_dict(mapped, strict=False)


def _listing(title: str, keys: list[str], limit: int = 20) -> str:
    if not keys:
        return ""
    shown = "\n".join(f"    {k}" for k in keys[:limit])
    more = f"\n    ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"  {title}:\n{shown}{more}\n"
