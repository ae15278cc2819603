"""The report in a real browser: Debian's headless Chromium loads the page from disk, with no network.

Three runs of Chromium: the page itself (a screenshot, and its console, which must stay silent: the page has no
script, so any console line is a failed load or an error); a copy with a probe script appended that counts the
gallery images and the images that did not decode; and a control page with a console error and a broken image,
which the same checks must catch (so they can fail).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import build
from PIL import Image

from fclm_data.report import write_report
from fclm_data.sources import BuildOptions

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)"
)
CONSOLE = re.compile(r":CONSOLE[^\]]*\] (.*)")
PROBE = """<script>addEventListener("load", () => {
  const all = [...document.images];
  console.log("PROBE " + JSON.stringify({
    gallery: document.querySelectorAll("img.gallery-img").length,
    broken: all.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 40)),
    images: all.length}));
});</script>"""


def chromium(page: Path, profile: Path, *flags: str) -> tuple[str, list[str]]:
    """(stdout, console lines) of one headless run on ``page``."""
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
         *flags, page.as_uri()],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [m.group(1) for m in map(CONSOLE.search, proc.stderr.splitlines()) if m]


def probe(page: Path, tmp_path: Path) -> tuple[dict, list[str]]:
    probed = page.with_name("probed.html")
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    _, console = chromium(probed, tmp_path / "profile-probe", "--dump-dom")
    lines = [c for c in console if c.startswith('"PROBE ')]
    assert len(lines) == 1, console
    return json.loads(lines[0][len('"PROBE ') : lines[0].rindex('"')].replace('\\"', '"')), console


def test_report_in_headless_chromium(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "build"
    build(["osprey_conversations", "dam_sam", "grandf"], data_root, out, options=BuildOptions(visual_prompt="point"))
    result = write_report(out, samples=2)
    page = result.path

    shot = tmp_path / "page.png"
    _, console = chromium(page, tmp_path / "profile", "--window-size=1280,2400", f"--screenshot={shot}")
    assert console == []
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (2400, 1280)
    assert (np.abs(pixels - [29, 35, 48]).sum(axis=2) < 6).mean() > 0.02  # the dark page header was painted
    assert len(np.unique(pixels.reshape(-1, 3)[::37], axis=0)) > 200  # charts and text, not a blank page

    found, console = probe(page, tmp_path)
    assert found["broken"] == [] and found["gallery"] == result.gallery_images > 0
    assert found["images"] > found["gallery"]  # the charts are images too
    assert [c for c in console if not c.startswith('"PROBE ')] == []


def test_the_browser_checks_catch_a_bad_page(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                   '<img class="gallery-img" alt="gone" src="missing.png">'
                   '<script>console.error("boom")</script></body></html>')  # fmt: skip
    _, console = chromium(bad, tmp_path / "profile", "--dump-dom")
    assert any("boom" in c for c in console)
    found, _ = probe(bad, tmp_path)
    assert found["broken"] == ["gone"] and found["gallery"] == 1
