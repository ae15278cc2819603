"""Build throughput vs a plain copy of the same input bytes, and the 2-worker speed-up.

    python bench/build_throughput.py [--samples 2000] [--size 640x480] [--repeats 3] [--workdir DIR]

Generates a RefCOCO-family data root (COCO-like image sizes, polygon masks) with at least
``--samples`` training samples, then, in the same run and interleaved ``--repeats`` times:

* copy: every planned sample's image bytes and its raw annotation record, read and written into
  tars of the same shard size -- what any converter must at least do;
* build: ``fclm-data build`` with 1 worker (serial) and with 2 worker processes, once with the
  default image check (every JPEG decoded at 1/8 scale) and once with ``--image-check markers``.

Prints medians and the ratios build/copy (goal <= 1.5x) and 1-worker/2-worker (goal >= 1.7x).
The machine is noisy: only ratios measured side by side in one run are meaningful.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fclm_data.build.plan import make_plan  # noqa: E402
from fclm_data.build.run import BuildConfig, run_build  # noqa: E402
from fclm_data.images import IMAGE_CHECKS  # noqa: E402
from fclm_data.recipes import single_source_recipe  # noqa: E402
from fclm_data.sources import BuildOptions  # noqa: E402
from fclm_data.synthetic import generate_data_root  # noqa: E402

SOURCES = ["refcoco", "refcoco_plus", "refcocog"]


def copy_baseline(plan, out: Path) -> int:
    """Read each planned sample's image and raw record; write both into tars (no processing)."""
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for index, shard in enumerate(plan.shards()):
        with tarfile.open(out / f"copy-{index:06d}.tar", "w") as tar:
            for sample in shard:
                payload = sample.unit.payload
                image = (plan.data_root / "coco/train2014" / payload["image"]["file_name"]).read_bytes()
                record = json.dumps(payload).encode()
                for name, data in ((f"{sample.key}.jpg", image), (f"{sample.key}.json", record)):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                written += 1
    return written


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shard-size", type=int, default=250)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fclm-bench-"))
    root = work / "root"
    scale = -(-args.samples // 24)  # the generator writes 24 train images per scale unit (3 datasets x 8)
    t_gen = 0.0
    if not (root / "refer_seg").exists():  # reuse a --workdir's data root across runs
        t_gen = timed(lambda: generate_data_root(root, families=["refcoco"], scale=scale, image_size=(width, height)))
    recipe = single_source_recipe(SOURCES, seed=0, shard_size=args.shard_size)
    plan = make_plan(recipe, root)
    n = len(plan.samples)
    input_bytes = sum(p.stat().st_size for p in (root / "coco/train2014").iterdir())
    print(
        f"data root: {n:,} samples, {input_bytes / 1e6:.0f} MB of {width}x{height} JPEGs (generated in {t_gen:.1f} s)"
    )

    variants = {"copy": None}
    for check in IMAGE_CHECKS:
        for workers in (1, 2):
            variants[f"{check} x{workers}"] = (check, workers)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, variant in variants.items():
            out = work / name.replace(" ", "")
            shutil.rmtree(out, ignore_errors=True)
            if variant is None:
                times[name].append(timed(lambda out=out: copy_baseline(plan, out)))
                continue
            check, workers = variant
            config = BuildConfig(
                root, out, executor="serial" if workers == 1 else "processes", workers=workers,
                options=BuildOptions(image_check=check),
            )  # fmt: skip
            times[name].append(timed(lambda config=config: run_build(recipe, config)))
    median = {k: statistics.median(v) for k, v in times.items()}
    for name, value in median.items():
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:>11}: {value:6.2f} s  {n / value:8.0f} samples/s  (runs: {runs})")
    for check in IMAGE_CHECKS:
        x1, x2 = median[f"{check} x1"], median[f"{check} x2"]
        print(f"[{check}] build/copy (1 worker): {x1 / median['copy']:.2f}x (goal <= 1.5x); "
              f"speed-up 2 vs 1 workers: {x1 / x2:.2f}x (goal >= 1.7x)")  # fmt: skip
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
