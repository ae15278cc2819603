"""Indexing at release size: peak RSS and time of ``Source.index()`` on generated release-size files.

    python bench/index_scale.py [--workdir DIR] [--only osprey_conversations,...] [--scale 1.0]

For each source, the demo release file is grown to the release's size (``SIZES``: Osprey's from
its dataset.md; the others are assumptions, marked) by repeating its records with fresh ids, and
indexed in a fresh interpreter; peak RSS (``VmHWM``, reset after the imports) is reported above the
interpreter's own RSS with its imports. One source at a time, so the figures do not add up across sources.
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
import json, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from fclm_data.sources import get_source

def status(field):  # kB -> MiB, from /proc/self/status (ru_maxrss would carry the parent's peak across exec)
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1]) / 1024

get_source({source!r}, {root!r})  # imports first: their memory is the baseline
base = status("VmRSS")
Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
start = time.perf_counter()
if {reader_only!r}:  # the streaming reader alone, no units: what memory is without them
    from fclm_data.jsonstream import iter_json_list, iter_json_members
    path = Path({root!r}) / {rel!r}
    with path.open("rb") as fh:
        is_list = fh.read(1) == b"["
    n = sum(1 for _ in (iter_json_list(path, {rel!r}) if is_list else iter_json_members(path, {rel!r}, {{"images", "annotations"}})))
    units, rejects = n, 0
else:
    result = get_source({source!r}, {root!r}).index()
    units, rejects = len(result.units), len(result.rejects)
seconds = time.perf_counter() - start
peak = status("VmHWM")
print(json.dumps({{"units": units, "rejects": rejects, "seconds": seconds, "base_mib": base, "peak_mib": peak}}))
"""


def grow(data, copies: int, first: int = 0):
    """``copies`` repetitions of a release's records, ids shifted so every copy is distinct."""
    if isinstance(data, list):
        out = []
        for c in range(first, first + copies):
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
    data = json.loads(small)
    with path.open("w") as out:
        if isinstance(data, list):  # copy by copy (the same bytes as one json.dumps): MUSE's GB stays out of memory
            out.write("[")
            for c in range(copies):
                out.write((", " if c else "") + ", ".join(json.dumps(r) for r in grow(data, 1, c)))
            out.write("]")
        else:
            out.write(json.dumps(grow(data, copies)))
    return path.stat().st_size


def probe(repo: str, source: str, root: Path, rel: str = "", reader_only: bool = False) -> dict:
    """Index ``source`` under ``root`` with the code of checkout ``repo``, in a fresh interpreter
    (``reader_only``: only stream ``rel`` through :mod:`fclm_data.jsonstream`, keeping nothing)."""
    code = _PROBE.format(repo=repo, source=source, root=str(root), rel=rel, reader_only=reader_only)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--only", default=",".join(SIZES))
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the release size (quick tries)")
    parser.add_argument("--baseline", default=None, help="another checkout (e.g. the whole-file readers) to compare")
    parser.add_argument("--reader", action="store_true", help="also the streaming reader alone (records kept: none)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fclm-scale-"))
    demo = work / "demo"
    if not demo.exists():
        generate_data_root(demo, families=["osprey", "gcg", "muse", "visual_genome", "paco_lvis"])
    repo = str(Path(__file__).resolve().parents[1])
    extra = (" baseline RSS | baseline time | RSS ratio |" if args.baseline else "") + (
        " reader alone RSS | reader alone time |" if args.reader else "")
    print(f"| source | file size | units | peak RSS above the interpreter | per unit | index time |{extra} size from |")
    print("|---|---:|---:|---:|---:|---:|" + "---:|" * (3 * bool(args.baseline) + 2 * args.reader) + "---|")
    for source in args.only.split(","):
        rel, mb, where = SIZES[source]
        root = work / source
        started = time.perf_counter()
        size = write_release_size(demo, root, rel, mb * args.scale)
        generated = time.perf_counter() - started
        r = probe(repo, source, root)
        rss = r["peak_mib"] - r["base_mib"]
        per_unit = rss * 2**20 / max(r["units"], 1)
        row = f"| {source} | {size / 1e6:,.0f} MB | {r['units']:,} | {rss:,.0f} MiB | {per_unit:,.0f} B | {r['seconds']:.1f} s |"
        if args.baseline:
            b = probe(str(Path(args.baseline).resolve()), source, root)
            b_rss = b["peak_mib"] - b["base_mib"]
            row += f" {b_rss:,.0f} MiB | {b['seconds']:.1f} s | {rss / max(b_rss, 1):.2f}x |"
        if args.reader:
            a = probe(repo, source, root, rel, reader_only=True)
            row += f" {a['peak_mib'] - a['base_mib']:,.0f} MiB | {a['seconds']:.1f} s |"
        print(f"{row} {where} |", flush=True)
        print(f"  (generated in {generated:.0f} s; interpreter with imports {r['base_mib']:.0f} MiB)", file=sys.stderr)


if __name__ == "__main__":
    main()
