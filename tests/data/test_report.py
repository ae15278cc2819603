"""``fclm-data report``: the page's structure and numbers against the build, seeded galleries, the token budget
against the trainer's own encoder, the torch-free fallback and the user-facing errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import build, read_rejects, read_samples
from typer.testing import CliRunner

from fclm_data.cli import app
from fclm_data.report import write_report
from fclm_data.report.collect import collect
from fclm_data.seeding import stable_hash
from fclm_data.sources import BuildOptions

runner = CliRunner()
MIX = ["osprey_conversations", "grandf", "dam_sam", "paco_lvis"]  # inputs, GCG targets, paired, rejects


@pytest.fixture(scope="module")
def mix_build(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four sources with <region> inputs, [SEG] targets, DL-RES pairs and rejects, as scribble prompts."""
    out = tmp_path_factory.mktemp("mix")
    build(MIX, data_root, out, options=BuildOptions(visual_prompt="scribble"))
    return out


class Page(HTMLParser):
    """Tags, attributes and text of a page (stdlib parser: what a browser would build, minus layout)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, cls: str | None = None) -> list[dict]:
        return [a for t, a in self.tags if t == tag and (cls is None or cls in (a.get("class") or "").split())]

    @property
    def plain(self) -> str:
        return " ".join(" ".join(self.text).split())


def expected_gallery(out: Path, per_group: int) -> tuple[int, int]:
    """(samples, images) the galleries must show: per (entry, task) min(n, size), two images per paired sample."""
    samples = read_samples(out)
    rows = pq.read_table(out / "manifest.parquet", columns=["key", "entry", "task"]).to_pylist()
    groups = Counter((r["entry"], r["task"]) for r in rows)
    paired = Counter((r["entry"], r["task"]) for r in rows if samples[r["key"]][0]["pair"] is not None)
    shown = {g: min(per_group, n) for g, n in groups.items()}
    images = sum(k * (2 if paired[g] else 1) for g, k in shown.items())  # a group is all paired or none
    return sum(shown.values()), images


def test_page_structure_and_numbers(mix_build: Path, tmp_path: Path) -> None:
    html = tmp_path / "page" / "index.html"
    result = runner.invoke(app, ["report", str(mix_build), "--html", str(html), "--samples", "3", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    page = Page(html.read_text(encoding="utf-8"))
    manifest = json.loads((mix_build / "manifest.json").read_text())

    # self-contained: no script, every image inline, no stylesheet or link to anywhere
    assert not page.find("script")
    assert all(a["src"].startswith("data:image/") for a in page.find("img"))
    assert not [a for t, a in page.tags if any(str(v).startswith(("http:", "https:", "//")) for v in a.values())]

    samples, images = expected_gallery(mix_build, 3)
    assert len(page.find("img", "gallery-img")) == images == summary["gallery_images"]
    assert len(page.find("article", "sample")) == samples == summary["gallery_samples"]
    assert summary["samples"] == manifest["totals"]["written"]

    text = page.plain
    assert manifest["plan_fingerprint"] in text and manifest["recipe"]["fingerprint"] in text
    assert "scribble" in text and "visual_prompt" in text  # the options table
    for name, ledger in manifest["sources"].items():
        assert (
            f"{name} {ledger['records']:,} {ledger['index_rejected']:,} {ledger['excluded_eval']:,} "
            f"{ledger['available']:,} {ledger['selected']:,} {ledger['written']:,} {ledger['rejected']:,}" in text
        )
    rejects = read_rejects(mix_build)
    assert rejects, "the demo data's defects should reject something"
    for line in rejects[:5]:  # every reason with its example records (the first of each reason at least)
        assert line["code"] in text
    first_of_each = {}
    for line in rejects:
        first_of_each.setdefault((line["source"], line["stage"], line["code"]), line)
    for line in first_of_each.values():
        assert " ".join(str(line["detail"]).split()) in text

    # distributions: tokens against the budget, the other charts, every template table used
    assert f"above max_length {summary['max_length']:,}" in text
    plots = page.find("img", None)
    assert sum(a["src"].startswith("data:image/svg+xml") for a in plots) >= 4 + 1
    tables = {t.rpartition(":")[0] for s, _, _ in read_samples(mix_build).values() for t in s["templates"]}
    for table in tables:
        assert f"{table}:" in text


def _tints(html: str) -> list[str]:
    return [part.split('"', 1)[0] for part in html.split('style="--c:')[1:]]


def test_conversation_tokens_carry_their_region_colour(mix_build: Path) -> None:
    from fclm_data.render import colour_hex
    from fclm_data.report.page import linked_turns

    sample = next(s for s, _, _ in read_samples(mix_build).values() if s["source"] == "grandf" and
                  len(s["seg_targets"]) > 1)  # fmt: skip
    html = "".join(linked_turns(sample))
    assert _tints(html) == [colour_hex(i) for i in sample["seg_targets"]]
    assert "<p>" not in html and "&lt;p&gt;" in html  # source text is escaped, never markup
    # reading order runs across turns: the second turn's <region> is region_inputs[1]
    view = {"conversations": [{"role": "user", "content": "<image> what is <region>?"},
                              {"role": "assistant", "content": "a cat"},
                              {"role": "user", "content": "and <region>?"}, {"role": "assistant", "content": "a dog"}],
            "region_inputs": [2, 0], "seg_targets": []}  # fmt: skip
    assert [_tints(t) for t in linked_turns(view)] == [[colour_hex(2)], [], [colour_hex(0)], []]


def test_gallery_is_seeded_and_stable(mix_build: Path) -> None:
    first = collect(mix_build, 3, seed=0)
    again = collect(mix_build, 3, seed=0)
    keys = {g: [p.sample["key"] for p in picked] for g, picked in first.gallery.items()}
    assert keys == {g: [p.sample["key"] for p in picked] for g, picked in again.gallery.items()}
    rows = pq.read_table(mix_build / "manifest.parquet", columns=["key", "entry", "task"]).to_pylist()
    for (entry, task), picked in keys.items():
        group = sorted((r["key"] for r in rows if (r["entry"], r["task"]) == (entry, task)),
                       key=lambda k: stable_hash(0, "report", k))  # fmt: skip
        assert picked == group[:3]
    other = {g: [p.sample["key"] for p in picked] for g, picked in collect(mix_build, 3, seed=1).gallery.items()}
    assert other != keys  # 16 dam_sam samples: another seed draws others


def test_token_budget_agrees_with_the_trainer(mix_build: Path, tmp_path: Path) -> None:
    """Samples above --max-length are exactly those the trainer's Encoder skips as too_long."""
    from fclm_data.report.tokens import TokenCounter
    from fclm_train.data.encode import Encoder, EncoderConfig
    from fclm_train.data.tokenizer import offline_qwen_tokenizer

    counter = TokenCounter()
    lengths = sorted(counter.count(s) for s, _, _ in read_samples(mix_build).values())
    budget = lengths[len(lengths) // 2]
    result = write_report(mix_build, tmp_path / "r.html", samples=1, max_length=budget)
    encoder = Encoder(offline_qwen_tokenizer(), EncoderConfig(max_length=budget))
    for sample, image, ext in read_samples(mix_build).values():
        encoder({"__key__": sample["key"], "json": json.dumps(sample).encode(), ext: image})
    assert result.over_max_length == encoder.skipped["too_long"] == sum(n > budget for n in lengths) > 0
    assert f"{result.over_max_length:,} of {result.samples:,} above max_length {budget:,}" in Page(
        (tmp_path / "r.html").read_text()).plain  # fmt: skip


def test_report_without_the_train_extra(mix_build: Path, tmp_path: Path) -> None:
    """fclm_data needs neither torch nor matplotlib: the page is written and says why tokens, prompts, charts are missing."""
    html = tmp_path / "nt.html"
    code = ("import sys; sys.modules['torch'] = None; sys.modules['matplotlib'] = None\n"
            "from fclm_data.cli import app\n"
            f"app(['report', {str(mix_build)!r}, '--html', {str(html)!r}, '--samples', '2', '--json'])")  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["tokens_counted"] == 0 and summary["over_max_length"] is None
    assert "token counts need the trainer's extra (pip install fclm[train])" in proc.stderr
    assert "visual prompts shown as region masks" in proc.stderr
    text = Page(html.read_text()).plain
    assert "token counts need the trainer's extra" in text and "visual prompts shown as region masks" in text
    assert "plots need matplotlib (pip install fclm[report])" in text
    assert not [a for a in Page(html.read_text()).find("img") if a["src"].startswith("data:image/svg")]
    assert "dlc_question 1: " in text  # the template counts as a table instead
    assert len(Page(html.read_text()).find("img", "gallery-img")) == summary["gallery_images"] > 0


def test_leakage_report_is_included(data_root: Path, mix_build: Path, tmp_path: Path) -> None:
    from fclm_data.leakage import find_leaks
    from fclm_data.recipes import load_recipe, single_source_recipe

    leaks = find_leaks(single_source_recipe(["refcoco"], 0, 1000), [load_recipe("eval_refcoco")], data_root.resolve())
    path = tmp_path / "leak.json"
    path.write_text(
        json.dumps({"recipe": "refcoco", "eval": ["eval_refcoco"], "sources": [x.to_dict() for x in leaks]})
    )
    html = tmp_path / "l.html"
    result = runner.invoke(
        app, ["report", str(mix_build), "--html", str(html), "--samples", "0", "--leakage", str(path)]
    )
    assert result.exit_code == 0, result.output
    text = Page(html.read_text()).plain
    row = leaks[0].to_dict()
    assert f"{row['entry']} {row['units']:,} {row['leaking_units']:,} {row['leaking_images']:,}" in text
    assert "eval_refcoco" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["/nonexistent/build"], "not a directory"),
        (["{tmp}"], "no manifest.json"),
        (["{build}", "--leakage", "{tmp}/nope.json"], "not a readable `fclm-data leakage --json` report"),
    ],
)
def test_user_errors_are_one_line(args: list[str], message: str, mix_build: Path, tmp_path: Path) -> None:
    args = [a.format(tmp=tmp_path, build=mix_build) for a in args]
    result = runner.invoke(app, ["report", *args, "--html", str(tmp_path / "x.html")])
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "x.html").exists()


def test_unreadable_samples_are_listed_not_dropped(mix_build: Path, tmp_path: Path) -> None:
    import io
    import shutil
    import tarfile

    out = tmp_path / "damaged"
    shutil.copytree(mix_build, out, ignore=shutil.ignore_patterns("report"))
    shard = out / "shard-000000.tar"
    with tarfile.open(mix_build / "shard-000000.tar") as src, tarfile.open(shard, "w") as dst:
        damaged = None
        for member in src:
            data = src.extractfile(member).read()
            if member.name.endswith(".json") and damaged is None:
                damaged, data = member.name.partition(".")[0], b"{not json"
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    result = write_report(out, tmp_path / "d.html", samples=1)
    text = Page((tmp_path / "d.html").read_text()).plain
    assert result.samples == json.loads((mix_build / "manifest.json").read_text())["totals"]["written"] - 1
    assert f"shard-000000.tar: {damaged}: json does not parse" in text and "1 unreadable samples" in text
