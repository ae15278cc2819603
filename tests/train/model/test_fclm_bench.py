"""``bench/model_step.py`` runs its CPU path (tiny preset) and reports every figure."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench" / "model_step.py"


def test_bench_runs_tiny_on_cpu(capsys):
    spec = importlib.util.spec_from_file_location("model_step", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.main(["--config", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "1", "--json"])
    assert report["objects"] == 5 and report["image_tokens"] > 0
    assert report["tokens_per_s"] > 0 and report["peak_memory_gib"] > 0 and report["llm_gflop_per_step"] > 0
    assert report["llm_mfu"] is None  # no peak FLOP/s for a CPU
    assert '"tokens_per_s"' in capsys.readouterr().out
    assert dict(bench.PEAK_BF16_TFLOPS)["H100"] == 989.4
