"""The ledger written beside the shards.

* ``manifest.json``: recipe, plan fingerprint, per-source ledger (records = available +
  index_rejected; selected = written + rejected), per-shard samples/bytes/sha256.
* ``rejects.jsonl``: one line per rejected record or dropped annotation: source, record, file,
  code, detail, stage.
* ``manifest.parquet``: one row per sample (key, shard, byte offset and size, source, task, image
  id, number of regions, template ids, sha256 of the JSON member, the EXIF orientation tag the
  image carried before it was neutralised).
* ``shardindex.json``: webdataset's ``wids`` shard index (``wids-shard-index-v1``).
* ``README.md``: an HF dataset card whose ``dataset_info.features`` lets ``load_dataset(OUT)``
  read any mix of samples (see :func:`fclm_data.schema.hf_features`).

All files are deterministic functions of the plan and the shard results (no timestamps).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from fclm_data import __version__
from fclm_data.schema import SCHEMA_VERSION

MANIFEST = "manifest.json"
REJECTS = "rejects.jsonl"
PARQUET = "manifest.parquet"
WIDS_INDEX = "shardindex.json"
CARD = "README.md"


def source_ledger(source_plan: Any, results: list[Any]) -> dict[str, Any]:
    """Per-source counts; the build asserts the two balance equations hold."""
    name = source_plan.name
    written = sum(r.per_source.get(name, {}).get("written", 0) for r in results)
    rejected = sum(r.per_source.get(name, {}).get("rejected", 0) for r in results)
    reasons = Counter(rj.code for rj in source_plan.index_rejects + source_plan.excluded)
    reasons.update(rj["code"] for r in results for rj in r.rejects if rj["source"] == name)
    dropped = Counter(d["code"] for r in results for d in r.dropped if d["source"] == name)
    return {
        "source": source_plan.source,
        "requested": source_plan.requested,
        "records": source_plan.records,
        "index_rejected": len(source_plan.index_rejects),
        "excluded_eval": len(source_plan.excluded),
        "available": source_plan.available,
        "selected": source_plan.selected,
        "repeats": source_plan.repeats,
        "written": written,
        "rejected": rejected,
        "reject_reasons": dict(sorted(reasons.items())),
        "dropped_annotations": dict(sorted(dropped.items())),
        "options": source_plan.options,
        "missing": source_plan.missing,
        "warnings": source_plan.warnings,
    }


def build_manifest(
    plan: Any, results: list[Any], options: dict[str, Any], fingerprint: str | None = None
) -> dict[str, Any]:
    results = sorted(results, key=lambda r: r.index)
    sources = {sp.name: source_ledger(sp, results) for sp in plan.sources}
    for name, ledger in sources.items():
        if ledger["selected"] != ledger["written"] + ledger["rejected"]:
            raise RuntimeError(f"ledger does not balance for {name}: {ledger}")
        if ledger["records"] != ledger["available"] + ledger["index_rejected"] + ledger["excluded_eval"]:
            raise RuntimeError(f"index ledger does not balance for {name}: {ledger}")
    shards = [
        {
            "name": r.name,
            "samples": r.samples,
            "bytes": r.bytes,
            "sha256": r.sha256,
            "sources": {k: v["written"] for k, v in sorted(r.per_source.items()) if v["written"]},
        }
        for r in results
        if r.samples
    ]
    totals = {
        key: sum(s[key] for s in sources.values())
        for key in ("records", "index_rejected", "excluded_eval", "available", "selected", "written", "rejected")
    }
    totals.update(shards=len(shards), bytes=sum(s["bytes"] for s in shards))
    recipe = plan.recipe
    extra = {}
    if options.get("format", "fclm") != "fclm":  # non-default formats only: fclm manifests keep their bytes
        extra["format"] = options["format"]
        labels = {label for r in results for row in r.rows for label in row.get("labels", [])}
        if options["format"] == "mvplm":
            extra["mvplm_vocabulary"] = sorted(labels)
    return {
        "schema": SCHEMA_VERSION,
        "fclm_version": __version__,
        "recipe": {
            "name": recipe.name,
            "path": recipe.path,
            "seed": recipe.seed,
            "shard_size": recipe.shard_size,
            "fingerprint": recipe.fingerprint(),
        },
        "shard_size": plan.shard_size,
        "warnings": plan.warnings,
        "plan_fingerprint": fingerprint or plan.fingerprint(),
        "options": options,
        "totals": totals,
        "sources": sources,
        "shards": shards,
        **extra,
    }


def reject_lines(plan: Any, results: list[Any]) -> list[dict]:
    lines = [rj.to_dict() for sp in plan.sources for rj in sp.index_rejects + sp.excluded]
    for result in sorted(results, key=lambda r: r.index):
        lines.extend(result.rejects)
        lines.extend(result.dropped)
    return lines


def write_outputs(
    out_dir: Path, plan: Any, results: list[Any], options: dict[str, Any], fingerprint: str | None = None
) -> dict[str, Any]:
    manifest = build_manifest(plan, results, options, fingerprint)
    _atomic_write(
        out_dir / REJECTS, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in reject_lines(plan, results))
    )
    _write_parquet(out_dir / PARQUET, sorted(results, key=lambda r: r.index))
    _atomic_write(out_dir / WIDS_INDEX, json.dumps(wids_index(manifest), indent=1) + "\n")
    image_exts = sorted({row["image_ext"] for r in results for row in r.rows}) or ["jpg"]
    _atomic_write(out_dir / CARD, dataset_card(manifest, image_exts))
    _atomic_write(out_dir / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return manifest


def wids_index(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": manifest["recipe"]["name"],
        "shardlist": [
            {"url": s["name"], "nsamples": s["samples"], "filesize": s["bytes"], "sha256": s["sha256"]}
            for s in manifest["shards"]
        ],
    }


def _write_parquet(path: Path, results: list[Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [row for r in results for row in r.rows]
    columns = (
        "key", "shard", "offset", "size", "entry", "source", "task", "image_id", "image_ext", "image_sha256", "num_regions",
        "templates", "json_sha256", "exif_orientation",
    )  # fmt: skip
    schema = pa.schema(
        [
            ("key", pa.string()), ("shard", pa.string()), ("offset", pa.int64()), ("size", pa.int64()),
            ("entry", pa.string()), ("source", pa.string()), ("task", pa.string()), ("image_id", pa.string()), ("image_ext", pa.string()),
            ("image_sha256", pa.string()), ("num_regions", pa.int32()), ("templates", pa.list_(pa.string())),
            ("json_sha256", pa.string()), ("exif_orientation", pa.int32()),
        ]
    )  # fmt: skip
    table = pa.table({c: [row[c] for row in rows] for c in columns}, schema=schema)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def dataset_card(manifest: dict[str, Any], image_exts: list[str]) -> str:
    """HF dataset card: features for ``load_dataset(OUT)``, and the build's counts for people."""
    lines = [
        _features_header(image_exts, manifest.get("format", "fclm")),
        f"# fclm shards: {manifest['recipe']['name']}\n",
        f"Built by fclm {manifest['fclm_version']} (sample schema v{manifest['schema']}), "
        f"plan {manifest['plan_fingerprint']}, seed {manifest['recipe']['seed']}.\n",
        "| source | available | selected | written | rejected |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in manifest["sources"].items():
        lines.append(f"| {name} | {s['available']:,} | {s['selected']:,} | {s['written']:,} | {s['rejected']:,} |")
    if len(image_exts) > 1:
        lines.append(
            f"\nImages are stored as {' and '.join(image_exts)}: HF `datasets` needs one member extension per "
            "sample set; rebuild with `--image-format jpg` to load these shards there."
        )
    return "\n".join(lines) + "\n"


def _features_header(image_exts: list[str], fmt: str = "fclm") -> str:
    import yaml

    from fclm_data.schema import hf_features_yaml

    if len(image_exts) != 1:
        return ""
    # data_files: only the shards (the directory also holds manifest.json, shardindex.json, ...)
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": "shard-*.tar"}]}]
    info = {"features": hf_features_yaml(image_exts[0], fmt)}
    return "---\n" + yaml.safe_dump({"configs": configs, "dataset_info": info}, sort_keys=False) + "---\n"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
