"""Indexing at release size: peak RSS and time of ``Source.index()`` on generated release-size files.

    python bench/index_scale.py [--workdir DIR] [--only osprey_conversations,...] [--scale 1.0]

For each source, the demo release file is grown to the release's size (``SIZES``: Osprey's from
its dataset.md; the others are assumptions, marked) by repeating its records with fresh ids, and
indexed in a fresh interpreter; peak RSS (``ru_maxrss``) is reported above the interpreter's
own (imports included). One source at a time, so the figures do not add up across sources.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fclm_data.synthetic import generate_data_root  # noqa: E402

#: source -> (annotation file under the data root, release size in MB, where the size comes from)
SIZES = {
    "osprey_short_form": ("osprey/osprey_short_form.json", 57, "Osprey dataset.md"),
    "osprey_conversations": ("osprey/osprey_conversation.json", 106, "Osprey dataset.md"),
    "osprey_lvis_posneg": ("osprey/osprey_lvis_positive_negative.json", 140, "Osprey dataset.md"),
    "osprey_detailed_description": ("osprey/osprey_detail_description.json", 63.4, "Osprey dataset.md"),
    "flickr30k_gcg": ("GranDf/annotations/train/flickr_mergedGT_GCG_train.json", 300, "assumed (\"multi-hundred-MB\")"),
    "grandf": ("GranDf/annotations/train/GranDf_HA_GCG_train.json", 200, "assumed"),
    "openpsg_gcg": ("GranDf/annotations/train/OpenPsgGCG_train.json", 200, "assumed"),
    "refcocog_gcg": ("GranDf/annotations/train/RefCOCOg_GCG_train.json", 100, "assumed"),
    "muse": ("muse/muse_train.json", 1000, "MUSE README (~1 GB)"),
    "vg": ("vg/vg_train_with_mask.json", 300, "assumed"),
    "paco_lvis": ("paco/paco_lvis_v1_train.json", 300, "assumed"),
}

_PROBE = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from fclm_data.sources import get_source
get_source({source!r}, {root!r})  # imports first: their memory is the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
result = get_source({source!r}, {root!r}).index()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"units": len(result.units), "rejects": len(result.rejects), "seconds": seconds,
                  "base_mib": base / 1024, "peak_mib": peak / 1024}}))
"""


def grow(data, copies: int):
    """``copies`` repetitions of a release's records, ids shifted so every copy is distinct."""
    if isinstance(data, list):
        out = []
        for c in range(copies):
            for record in data:
                record = dict(record)
                if isinstance(record.get("id"), int):
                    record["id"] += c * 10**7
                out.append(record)
        return out
    grown = dict(data)
    for key in ("images", "annotations"):
        grown[key] = []
        for c in range(copies):
            for entry in data[key]:
                entry = dict(entry)
                for field in ("id", "image_id"):
                    if isinstance(entry.get(field), int):
                        entry[field] += c * 10**7
                grown[key].append(entry)
    return grown


def write_release_size(demo: Path, root: Path, rel: str, mb: float) -> int:
    path, target = root / rel, int(mb * 1e6)
    if path.exists() and path.stat().st_size >= 0.95 * target:
        return path.stat().st_size
    path.parent.mkdir(parents=True, exist_ok=True)
    small = (demo / rel).read_bytes()
    copies = max(1, math.ceil(target / len(small)))
    path.write_text(json.dumps(grow(json.loads(small), copies)))
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--only", default=",".join(SIZES))
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the release size (quick tries)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fclm-scale-"))
    demo = work / "demo"
    if not demo.exists():
        generate_data_root(demo, families=["osprey", "gcg", "muse", "visual_genome", "paco_lvis"])
    repo = str(Path(__file__).resolve().parents[1])
    print("| source | file size | units | peak RSS (above the interpreter's) | index time | size from |")
    print("|---|---:|---:|---:|---:|---|")
    for source in args.only.split(","):
        rel, mb, where = SIZES[source]
        root = work / source
        started = time.perf_counter()
        size = write_release_size(demo, root, rel, mb * args.scale)
        generated = time.perf_counter() - started
        probe = _PROBE.format(repo=repo, source=source, root=str(root))
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {source} | {size / 1e6:,.0f} MB | {r['units']:,} | {r['peak_mib']:,.0f} MiB "
              f"({r['peak_mib'] - r['base_mib']:+,.0f}) "
              f"| {r['seconds']:.1f} s | {where} |", flush=True)  # fmt: skip
        print(f"  (generated in {generated:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
