"""Build throughput vs the limit (a plain copy of the same input bytes plus the same image check), and the 2-worker speed-up.

    python bench/build_throughput.py [--samples 2000] [--size 640x480] [--repeats 3] [--workdir DIR]

Generates a RefCOCO-family data root (COCO-like image sizes, polygon masks) with at least
``--samples`` training samples, then, in the same run and interleaved ``--repeats`` times:

* copy: every planned sample's image bytes and its raw annotation record, read and written into
  tars of the same shard size -- what any converter must at least do;
* limit (copy + check): the copy plus the build's image check alone, once per distinct image
  (``decode``: strict libjpeg-turbo at 1/8 scale; ``markers``: the structural walk) -- what a
  build that checks its images must at least do;
* build: ``fclm-data build`` with 1 and 2 worker processes (the default executor), with the default
  image check and with ``--image-check markers``.

The check's per-process cache is cleared before every run, so no run profits from an earlier
one. Prints medians and the ratios build/limit (goal <= 1.3x with 1 worker) and 1-worker/2-worker
(goal >= 1.8x on a build long enough to amortise start-up). The machine is noisy: only ratios
measured side by side in one run are meaningful.
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

from fclm_data import images  # noqa: E402
from fclm_data.build.plan import make_plan  # noqa: E402
from fclm_data.build.run import BuildConfig, run_build  # noqa: E402
from fclm_data.images import DEFAULT_MAX_PIXELS, IMAGE_CHECKS  # noqa: E402
from fclm_data.recipes import single_source_recipe  # noqa: E402
from fclm_data.sources import BuildOptions  # noqa: E402
from fclm_data.synthetic import generate_data_root  # noqa: E402

SOURCES = ["refcoco", "refcoco_plus", "refcocog"]


def copy_baseline(plan, out: Path, check: str | None = None) -> int:
    """Read each planned sample's image and raw record; write both into tars (no processing).

    With ``check``, each distinct image also goes through the build's image check (the limit row).
    """
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    checked: set[str] = set()
    for index, shard in enumerate(plan.shards()):
        with tarfile.open(out / f"copy-{index:06d}.tar", "w") as tar:
            for sample in shard:
                payload = sample.unit.payload
                image = (plan.data_root / "coco/train2014" / payload["image"]["file_name"]).read_bytes()
                if check is not None and payload["image"]["file_name"] not in checked:
                    checked.add(payload["image"]["file_name"])
                    images._verify(image, DEFAULT_MAX_PIXELS, check)
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

    variants: dict[str, tuple] = {"copy": ("copy", None)}
    for check in IMAGE_CHECKS:
        variants[f"limit {check}"] = ("copy", check)
    for check in IMAGE_CHECKS:
        for workers in (1, 2):
            variants[f"{check} x{workers}"] = ("build", check, workers)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, variant in variants.items():
            out = work / name.replace(" ", "")
            shutil.rmtree(out, ignore_errors=True)
            images._VERDICTS.clear()  # no run reuses an earlier run's image checks
            if variant[0] == "copy":
                times[name].append(timed(lambda out=out, v=variant: copy_baseline(plan, out, v[1])))
                continue
            _, check, workers = variant
            config = BuildConfig(
                root, out, executor="processes", workers=workers, options=BuildOptions(image_check=check)
            )
            times[name].append(timed(lambda config=config: run_build(recipe, config)))
    median = {k: statistics.median(v) for k, v in times.items()}
    for name, value in median.items():
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:>14}: {value:6.2f} s  {n / value:8.0f} samples/s  (runs: {runs})")
    print(f"one build = {n:,} samples in {plan.shards().__len__()} shard(s) of {args.shard_size}; start-up "
          "(planning, worker start) is included in every build time")  # fmt: skip
    for check in IMAGE_CHECKS:
        x1, x2, limit = median[f"{check} x1"], median[f"{check} x2"], median[f"limit {check}"]
        print(f"[{check}] build/limit (1 worker): {x1 / limit:.2f}x (goal <= 1.3x); build/copy: "
              f"{x1 / median['copy']:.2f}x; speed-up 2 vs 1 workers: {x1 / x2:.2f}x (goal >= 1.8x)")  # fmt: skip
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
