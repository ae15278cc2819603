"""Where the loader's limit is: a plain JPEG decode, our loader's CPU side, a LISA-style loader, the device step.

    python bench/loader_throughput.py                      # 640x480, scale 20 and 10x (200), 1 and 2 workers
    python bench/loader_throughput.py --image-size 2048 1536 --scale 4 --grow 10   # SA-1B-sized originals: draft
    python bench/loader_throughput.py --scale 5 --grow 4 --samples 16 --json        # quick

Data: ``generate_data_root(families=["refcoco"], scale=K, image_size=...)`` (RefCOCO, RefCOCO+, RefCOCOg in the
lichengunc/refer layout) and the shards ``fclm-data build`` makes from its train splits; a second root at
``grow x K`` for the scaling part. Both are cached under ``--work``.

Measured in one run, side by side (``--batch`` samples per batch, a DataLoader with N workers, fork start method):

* **decode** -- the CPU limit: the same shards read sequentially and each sample's JPEG bytes decoded with PIL, at
  the reduced DCT scale our loader uses where it applies, shipped as uint8 tensors; nothing else.
* **ours** -- ``fclm_train.data.ShardLoader``'s CPU side with the 3B preset's settings: tar reads, JSON, the JPEG
  decode, RLE masks decoded at their stored size and bit-packed, ChatML ids from the offline Qwen tokenizer --
  a ``CompactBatch``.
* **lisa** -- our re-implementation of what LISA's ``utils/refer_seg_dataset.py`` does: the dataset loads every
  ``refs(*).p`` + ``instances.json`` and indexes them (REFER's ``createIndex``) when it is built, in the main
  process, and the forked workers inherit it; per sample: a random image, its refs' sentences, 3 sampled, a
  full JPEG decode (PIL; LISA uses cv2), the CLIP view (224, ``CLIPImageProcessor``), the SAM view
  (``ResizeLongestSide(1024)``: PIL bilinear, SAM-normalised, padded), polygons rasterised with pycocotools and
  summed; the collate tokenises the LLaVA-style conversation (the Qwen tokenizer stands in for LLaMA's).
* **step** -- ``CompactBatch.prepare(device)`` per batch of ours (Qwen patches at long side 1024, the 1024 SAM
  frame, masks on it): in this process with one thread on the CPU, and on CUDA when a device is there
  (synchronised; the host-to-device copy included).

Reported: samples/s and samples/s per worker at 1 and 2 workers (after the first batch; best of ``--repeats``
interleaved runs, since a shared machine's load comes in bursts), ours / decode and ours / lisa; the step in ms per
batch; and, at K and grow x K, ours and lisa each in a fresh interpreter: time to the first batch (loader
construction included, imports excluded) and resident memory (RSS, and USS = private pages) per worker and of the
main process after ``--memory-batches`` more batches. No assertions: figures only.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fclm_data.build.run import BuildConfig, run_build  # noqa: E402
from fclm_data.recipes import single_source_recipe  # noqa: E402
from fclm_data.synthetic import generate_data_root  # noqa: E402
from fclm_data.templates import RES_ANSWERS, RES_QUESTIONS  # noqa: E402
from fclm_train.data.encode import EncoderConfig  # noqa: E402
from fclm_train.data.loader import LoaderConfig, ShardLoader  # noqa: E402
from fclm_train.data.shards import resolve_shard_set  # noqa: E402
from fclm_train.data.tokenizer import offline_qwen_tokenizer  # noqa: E402
from fclm_train.data.vision import open_image  # noqa: E402

SIDE = 1024
REFER = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}  # LISA's refer_seg_data, minus refclef
SOURCES = ["refcoco", "refcoco_plus", "refcocog"]
SAM_MEAN = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
SAM_STD = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)


# ------------------------------------------------------------------------------------------------ data
def ensure_data(work: Path, scale: int, image_size: tuple[int, int]) -> tuple[Path, Path]:
    """(data root, shard directory) at ``scale``, generated and built once."""
    tag = f"{scale}-{image_size[0]}x{image_size[1]}"
    root, shards = work / f"root-{tag}", work / f"shards-{tag}"
    if not (root / ".done").exists():
        generate_data_root(root, families=["refcoco"], scale=scale, image_size=image_size)
        (root / ".done").touch()
    if not (shards / "manifest.json").exists():
        recipe = single_source_recipe(SOURCES, 0, 1000)
        run_build(recipe, BuildConfig(data_root=root, out_dir=shards, executor="serial"))
    return root, shards


# ------------------------------------------------------------------------------------------------ LISA-style
class ReferIndex:
    """What REFER's constructor does: load refs + instances, index them (per dataset)."""

    def __init__(self, data_dir: Path, dataset: str, split_by: str) -> None:
        with open(data_dir / dataset / f"refs({split_by}).p", "rb") as f:
            self.refs = pickle.load(f)  # LISA: pickle.load (self-generated, trusted data here)
        instances = json.loads((data_dir / dataset / "instances.json").read_text())
        self.anns = {ann["id"]: ann for ann in instances["annotations"]}
        self.imgs = {img["id"]: img for img in instances["images"]}
        self.cats = {cat["id"]: cat["name"] for cat in instances["categories"]}
        self.img_to_anns: dict[int, list] = {}
        for ann in instances["annotations"]:
            self.img_to_anns.setdefault(ann["image_id"], []).append(ann)
        self.ref_by_id = {ref["ref_id"]: ref for ref in self.refs}
        self.sentences = {s["sent_id"]: s for ref in self.refs for s in ref["sentences"]}


class LisaStyleReferSeg(torch.utils.data.Dataset):
    """LISA's ``ReferSegDataset`` behaviour on the refer layout."""

    def __init__(self, root: Path, samples_per_epoch: int, classes_per_sample: int = 3):
        from transformers import CLIPImageProcessor

        self.root, self.samples_per_epoch = root, samples_per_epoch
        self.classes_per_sample = classes_per_sample
        self.clip = CLIPImageProcessor()  # clip-vit-large-patch14 defaults: shortest edge 224, crop 224
        self.data = {}
        for dataset, split_by in REFER.items():
            refer = ReferIndex(root / "refer_seg", dataset, split_by)
            train_refs = [ref for ref in refer.refs if ref["split"] == "train"]
            image_ids = sorted({ref["image_id"] for ref in train_refs})
            img2refs: dict[int, list] = {}
            for ref in train_refs:
                img2refs.setdefault(ref["image_id"], []).append(ref)
            self.data[dataset] = {"images": [refer.imgs[i] for i in image_ids], "anns": refer.anns,
                                  "img2refs": img2refs, "index": refer}  # fmt: skip

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, idx: int) -> dict:
        dataset = self.data[random.choice(list(REFER))]
        info = random.choice(dataset["images"])
        sents, ann_ids = [], []
        for ref in dataset["img2refs"][info["id"]]:
            for sent in ref["sentences"]:
                sents.append(sent["sent"])
                ann_ids.append(ref["ann_id"])
        picks = np.random.choice(len(sents), size=min(self.classes_per_sample, len(sents)), replace=False)
        path = self.root / "coco" / "train2014" / info["file_name"]
        image = np.asarray(Image.open(path).convert("RGB"))  # full decode (LISA: cv2.imread + cvtColor)
        masks = [self._polygon_mask(dataset["anns"][ann_ids[i]], info) for i in picks]
        questions = [random.choice(RES_QUESTIONS).format(expression=sents[i]) for i in picks]
        answers = [random.choice(RES_ANSWERS) for _ in picks]
        clip = self.clip.preprocess(image, return_tensors="pt")["pixel_values"][0]
        sam = self._sam_view(image)
        return {"image": sam, "clip": clip, "masks": torch.from_numpy(np.stack(masks)), "questions": questions,
                "answers": answers}  # fmt: skip

    @staticmethod
    def _polygon_mask(ann: dict, info: dict) -> np.ndarray:
        from pycocotools import mask as mask_utils

        rles = mask_utils.frPyObjects(ann["segmentation"], info["height"], info["width"])
        return np.sum(mask_utils.decode(rles), axis=2).astype(np.uint8)

    @staticmethod
    def _sam_view(image: np.ndarray) -> torch.Tensor:
        """segment-anything ``ResizeLongestSide(1024).apply_image`` then ``Sam.preprocess`` (normalise, pad)."""
        h, w = image.shape[:2]
        scale = SIDE / max(h, w)
        size = (int(w * scale + 0.5), int(h * scale + 0.5))
        x = torch.from_numpy(np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR)).copy())
        x = (x.permute(2, 0, 1).float() - SAM_MEAN) / SAM_STD
        return torch.nn.functional.pad(x, (0, SIDE - x.shape[2], 0, SIDE - x.shape[1]))


class LisaCollate:
    """LISA's collate: conversations -> prompt text -> ids, targets masked to the answers; tensors stacked."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, batch: list[dict]) -> dict:
        ids, labels = [], []
        for sample in batch:
            for question, answer in zip(sample["questions"], sample["answers"]):
                prompt = self.tokenizer.encode(f"A chat. USER: <image>\n{question} ASSISTANT: ")
                target = self.tokenizer.encode(f"{answer}</s>")
                ids.append(prompt + target)
                labels.append([-100] * len(prompt) + target)
        T = max(len(x) for x in ids)
        input_ids = torch.tensor([x + [0] * (T - len(x)) for x in ids])
        label_ids = torch.tensor([x + [-100] * (T - len(x)) for x in labels])
        clip = [s["clip"] for s in batch]
        return {"images": torch.stack([s["image"] for s in batch]),
                "images_clip": torch.cat(clip) if clip[0].ndim == 2 else torch.stack(clip),
                "input_ids": input_ids, "labels": label_ids, "attention_masks": input_ids.ne(0),
                "masks_list": [s["masks"] for s in batch]}  # fmt: skip


def lisa_loader(root: Path, workers: int, batch: int, tokenizer) -> torch.utils.data.DataLoader:
    dataset = LisaStyleReferSeg(root, samples_per_epoch=10**6)
    return torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers, shuffle=False,
                                       collate_fn=LisaCollate(tokenizer), worker_init_fn=_seed_worker)  # fmt: skip


def _seed_worker(worker_id: int) -> None:
    random.seed(worker_id)
    np.random.seed(worker_id)


# ------------------------------------------------------------------------------------------------ ours
def our_loader(shards: Path, workers: int, batch: int, tokenizer, shuffle_buffer: int) -> torch.utils.data.DataLoader:
    sets = [resolve_shard_set(str(shards))]
    encoder = EncoderConfig(side=SIDE)  # the 3B preset: Qwen patch 14, merge 2, <mask><pos>
    config = LoaderConfig(micro_batch_size=batch, num_workers=workers, shuffle_buffer=shuffle_buffer)
    return ShardLoader(sets, tokenizer, encoder, config).dataloader()


# ------------------------------------------------------------------------------------------------ the limit
class PlainDecode(torch.utils.data.IterableDataset):
    """The shards' tars read in order (each worker its share of shards, round after round) and every JPEG
    decoded as our loader decodes it (``open_image``: PIL, reduced DCT scale where it applies), nothing else."""

    def __init__(self, shards: Path, batch: int) -> None:
        super().__init__()
        self.tars, self.batch = sorted(str(p) for p in shards.glob("shard-*.tar")), batch

    def __iter__(self):
        from webdataset.tariterators import tarfile_samples

        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        by_shard = len(self.tars) >= workers  # else every worker reads every tar and decodes its share of samples
        mine = self.tars[worker::workers] if by_shard else self.tars
        batch = []
        while True:
            for n, raw in enumerate(tarfile_samples([{"url": url} for url in mine])):
                if by_shard or n % workers == worker:
                    batch.append(open_image(raw["jpg"], SIDE)[0])
                if len(batch) == self.batch:
                    yield batch
                    batch = []


def decode_loader(shards: Path, workers: int, batch: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(PlainDecode(shards, batch), batch_size=None, num_workers=workers,
                                       collate_fn=_identity)  # fmt: skip


def _identity(batch):
    return batch


def step_times(shards: Path, batch: int, tokenizer, shuffle_buffer: int, batches: int, device: str) -> list[float]:
    """Seconds per ``CompactBatch.prepare(device)`` over ``batches`` batches of ours (the first one, warm-up, not
    counted)."""
    iterator = iter(our_loader(shards, 0, batch, tokenizer, shuffle_buffer))
    inputs = [next(iterator).inputs for _ in range(batches + 1)]
    times = []
    for compact in inputs:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        prepared = compact.prepare(device)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        del prepared
    return times[1:]


# ------------------------------------------------------------------------------------------------ measuring
def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, USS) in MiB from /proc (USS: private clean + dirty pages)."""
    rss = uss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            uss += int(line.split()[1]) / 1024
    return rss, uss


def first_batch(make, more_batches: int) -> dict:
    """Time from building the loader to its first batch; memory per worker and of the main process after
    ``more_batches`` further batches (forked workers dirty inherited pages as they touch Python objects)."""
    start = time.perf_counter()
    iterator = iter(make())
    next(iterator)
    seconds = time.perf_counter() - start
    for _ in range(more_batches):
        next(iterator)
    workers = [memory_mb(w.pid) for w in getattr(iterator, "_workers", [])]
    main = memory_mb(os.getpid())
    del iterator
    return {"first_batch_s": seconds, "worker_rss_mb": float(np.mean([w[0] for w in workers])),
            "worker_uss_mb": float(np.mean([w[1] for w in workers])), "main_rss_mb": main[0]}  # fmt: skip


def first_batch_in_child(name: str, root: Path, shards: Path, args) -> dict:
    """:func:`first_batch` in a fresh interpreter, so no loader inherits this process's memory."""
    command = [sys.executable, __file__, "--child", name, "--child-root", str(root), "--child-shards", str(shards),
               "--batch", str(args.batch), "--shuffle-buffer", str(args.shuffle_buffer),
               "--child-batches", str(args.memory_batches)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(args) -> None:
    torch.set_num_threads(1)
    tokenizer = offline_qwen_tokenizer()
    make = makers(args.child_root, args.child_shards, 2, args, tokenizer)[args.child]
    print(json.dumps(first_batch(make, args.child_batches)))


def makers(root: Path, shards: Path, workers: int, args, tokenizer) -> dict:
    return {
        "decode": lambda: decode_loader(shards, workers, args.batch),
        "ours": lambda: our_loader(shards, workers, args.batch, tokenizer, args.shuffle_buffer),
        "lisa": lambda: lisa_loader(root, workers, args.batch, tokenizer),
    }


def throughput(make, samples: int, batch: int) -> float:
    """Samples/s over ``samples`` samples after the first batch (worker start-up excluded)."""
    iterator = iter(make())
    next(iterator)
    n, start = 0, time.perf_counter()
    while n < samples:
        next(iterator)
        n += batch
    seconds = time.perf_counter() - start
    del iterator
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/fclm-bench-loader"), help="data cache")
    parser.add_argument("--scale", type=int, default=20, help="generate_data_root scale K")
    parser.add_argument("--grow", type=int, default=10, help="the larger annotation set is grow x K")
    parser.add_argument("--samples", type=int, default=96, help="samples timed per throughput run")
    parser.add_argument("--batch", type=int, default=2, help="samples per batch (LISA: 2 per GPU)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--shuffle-buffer", type=int, default=1000, help="ours: raw samples per worker buffer")
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs per loader, interleaved; best kept")
    parser.add_argument("--image-size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    parser.add_argument("--memory-batches", type=int, default=20, help="batches before memory is read")
    parser.add_argument("--step-batches", type=int, default=10, help="batches timed through the device step")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-shards", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-batches", type=int, default=20, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    torch.set_num_threads(1)
    tokenizer = offline_qwen_tokenizer()
    size = tuple(args.image_size)
    small_root, small_shards = ensure_data(args.work, args.scale, size)
    big_root, big_shards = ensure_data(args.work, args.scale * args.grow, size)

    results: dict = {"throughput": {}, "scaling": {}}
    for workers in args.workers:
        rates: dict[str, list[float]] = {}
        for _ in range(args.repeats):  # interleaved, so a burst of load on a shared machine hits all loaders
            for name, make in makers(small_root, small_shards, workers, args, tokenizer).items():
                rates.setdefault(name, []).append(throughput(make, args.samples, args.batch))
        for name, runs in rates.items():
            best = max(runs)
            results["throughput"][f"{name}@{workers}"] = {"samples_per_s": best, "per_worker": best / workers,
                                                          "runs": runs}  # fmt: skip
    results["step"] = {}
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        times = step_times(small_shards, args.batch, tokenizer, args.shuffle_buffer, args.step_batches, device)
        results["step"][device] = {"ms_per_batch": 1000 * float(np.median(times)),
                                   "samples_per_s": args.batch / float(np.median(times)), "runs": times}  # fmt: skip
    for label, (root, shards) in (("1x", (small_root, small_shards)), (f"{args.grow}x", (big_root, big_shards))):
        annotations = sum((root / "refer_seg" / d / "instances.json").stat().st_size for d in REFER)
        loaders = {name: first_batch_in_child(name, root, shards, args) for name in ("ours", "lisa")}
        results["scaling"][label] = {"annotation_bytes": annotations, **loaders}
    if args.json:
        print(json.dumps(results, indent=1))
    report(results, args)


def report(results: dict, args) -> None:
    print(f"\nthroughput at scale {args.scale}, {args.image_size[0]}x{args.image_size[1]} images (batch {args.batch}, "
          f"{args.samples} samples after the first batch, best of {args.repeats})")
    print(f"{'loader':<12}{'workers':>8}{'samples/s':>12}{'per worker':>12}{'ours / it':>11}")
    for key, row in results["throughput"].items():
        name, workers = key.split("@")
        ours = results["throughput"][f"ours@{workers}"]["samples_per_s"]
        print(f"{name:<12}{workers:>8}{row['samples_per_s']:>12.2f}{row['per_worker']:>12.2f}"
              f"{ours / row['samples_per_s']:>10.2f}x")  # fmt: skip
    print(f"\ndevice step (CompactBatch.prepare, batch {args.batch}, median of {args.step_batches})")
    for device, row in results["step"].items():
        threads = " (1 thread, this process)" if device == "cpu" else ""
        print(f"{device:<12}{row['ms_per_batch']:>10.1f} ms/batch{row['samples_per_s']:>10.1f} samples/s{threads}")
    print(f"\ntime to first batch, memory per worker after {args.memory_batches} more batches "
          "(2 workers, each loader in a fresh process)")
    print(f"{'set':<6}{'annotations':>13}{'loader':>12}{'first batch s':>15}{'worker RSS MiB':>16}"
          f"{'worker USS MiB':>16}{'main RSS MiB':>14}")  # fmt: skip
    for label, row in results["scaling"].items():
        for name in ("ours", "lisa"):
            r = row[name]
            print(f"{label:<6}{row['annotation_bytes'] / 1e6:>11.2f}MB{name:>12}{r['first_batch_s']:>15.2f}"
                  f"{r['worker_rss_mb']:>16.1f}{r['worker_uss_mb']:>16.1f}{r['main_rss_mb']:>14.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
