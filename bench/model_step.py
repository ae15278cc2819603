"""Forward + backward step time of FCLM: tokens/s, MFU of the LLM part, peak memory.

    python bench/model_step.py --config 3b --device cuda --steps 10    # the true 3B architecture, random init
    python bench/model_step.py --config tiny                           # CPU smoke run, same report

The batch is one image at a long side of 1024 (a 1024 x 768 image: 999 Qwen image tokens, ~1.2k tokens in all)
with five ``<region>`` inputs and five ``[SEG]`` outputs, each region paired with one [SEG], so every part runs:
five SAM crop passes, the full-image SAM pass, the extractor, the LLM, five [SEG] masks and five
self-reconstructions through the decoder, the latent loss. Parameters stay float32 and the step runs under
bf16 autocast (``--dtype fp32`` to disable); no optimizer step.

MFU counts the LLM decoder only and divides by the whole step time (so it is a lower bound for the LLM):
``flops = 6 * N_layers * T + 6 * n_layers * d * T^2 + 6 * V * d * T_sup`` per step, with ``N_layers`` the
decoder-layer parameters, ``T`` the sequence tokens, ``d`` the hidden width, the causal attention term counting
QK^T and AV for the lower triangle (forward 2*T^2*d per layer, backward twice that), and the LM head applied to
the ``T_sup`` supervised tokens only (FCLM computes logits there only). Peak dense bf16 FLOP/s per GPU are in
:data:`PEAK_BF16_TFLOPS`.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fclm_train.model import FCLMConfig, build_fclm  # noqa: E402
from fclm_train.model.testing import ToySample, build_tiny_tokenizer, make_inputs, tiny_token_map  # noqa: E402

#: dense bf16 tensor-core peak (TFLOP/s) by a substring of ``torch.cuda.get_device_name``; first match wins.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100", 989.4),  # SXM / HBM3
    ("H200", 989.4),
    ("H20", 148.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("A10G", 70.0),
    ("RTX 4090", 165.2),
)
N_OBJECTS = 5


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def ellipse_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    ry, rx = rng.uniform(0.05, 0.2) * h, rng.uniform(0.05, 0.2) * w
    ys, xs = np.mgrid[:h, :w]
    return ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0


def bench_sample(cfg: FCLMConfig) -> ToySample:
    """A 4:3 image at the long side, five regions asked about and five [SEG] answers."""
    side = cfg.image_long_side
    h, w = side * 3 // 4, side
    rng = np.random.default_rng(0)
    masks = [ellipse_mask(h, w, rng) for _ in range(N_OBJECTS)]
    regions = ", ".join(["<region>"] * N_OBJECTS)
    question = f"<image>\nDescribe and segment {regions}."
    answer = " ".join(f"Item {i + 1}: a red cup [SEG]." for i in range(N_OBJECTS))
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return ToySample([("user", question), ("assistant", answer)], image, region_masks=masks, seg_masks=masks)


def llm_step_flops(model, tokens: int, supervised: int) -> float:
    """Forward + backward FLOPs of the LLM decoder for one sequence (formula in the module docstring)."""
    text = model.qwen.config.get_text_config()
    layer_params = sum(p.numel() for p in model.qwen.model.language_model.layers.parameters())
    d, n_layers, vocab = text.hidden_size, text.num_hidden_layers, model.qwen.lm_head.weight.shape[0]
    return 6.0 * layer_params * tokens + 6.0 * n_layers * d * tokens**2 + 6.0 * vocab * d * supervised


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (process peak RSS)


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    overrides = {"llm": {"attn_implementation": args.attn, "gradient_checkpointing": args.grad_ckpt}}
    cfg = FCLMConfig.preset(args.config, **overrides)
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device(device):
        model = build_fclm(cfg)  # random init; the preset's Qwen token ids
    build_s = time.perf_counter() - start
    model.train()
    tokenizer = build_tiny_tokenizer()  # byte-level text; special ids remapped onto the preset's
    inputs = make_inputs([bench_sample(cfg)], tokenizer, cfg, pairs=[(i, i) for i in range(N_OBJECTS)],
                         token_map=tiny_token_map(tokenizer, cfg)).to(device)  # fmt: skip
    tokens = int(inputs.attention_mask.sum())
    supervised = int((inputs.labels[:, 1:] != -100).sum())
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else nullcontext()
    times = []
    for step in range(args.warmup + args.steps):
        if step == args.warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        t0 = time.perf_counter()
        with autocast:
            out = model(inputs)
        out.loss.backward()
        _sync(device)
        times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    step_s = float(np.mean(times[args.warmup :]))
    flops = llm_step_flops(model, tokens, supervised)
    peak = peak_tflops(device)
    return {
        "config": args.config, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype, "attn": args.attn, "grad_ckpt": args.grad_ckpt,
        "params_total": sum(p.numel() for p in model.parameters()),
        "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "tokens": tokens, "image_tokens": int(inputs.mm_token_type_ids.sum()), "supervised_tokens": supervised,
        "objects": N_OBJECTS, "build_s": round(build_s, 2), "step_s": round(step_s, 4),
        "step_s_min": round(min(times[args.warmup :]), 4), "tokens_per_s": round(tokens / step_s, 1),
        "llm_gflop_per_step": round(flops / 1e9, 3),
        "llm_mfu": round(flops / step_s / (peak * 1e12), 4) if peak else None,
        "peak_bf16_tflops": peak, "peak_memory_gib": round(peak_memory_gib(device), 2),
        "loss": round(out.loss.item(), 4),
    }  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=["tiny", "3b", "7b"], default="3b" if cuda else "tiny")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16" if cuda else "fp32")
    parser.add_argument("--attn", default="sdpa", help="sdpa | flash_attention_2 (GPU, flash-attn installed)")
    parser.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing in the LLM")
    parser.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (0: torch default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run(args)
    if args.json:
        print(json.dumps(report))
    else:
        width = max(len(k) for k in report)
        for key, value in report.items():
            print(f"{key:<{width}}  {value if value is not None else 'n/a'}")
    return report


if __name__ == "__main__":
    main()
