"""The report as one self-contained HTML page: inline CSS, images and charts as data URIs, no script, no network.

Every value a person reads is escaped here (:func:`esc`); conversation text keeps its placeholders visible, with
each ``<region>`` / ``[SEG]`` tinted in the colour its region has on the image (``fclm_data.render.colour``).
"""

from __future__ import annotations

import base64
import html
import io
import statistics
from collections import Counter
from collections.abc import Iterable

from PIL import Image

from fclm_data.render import colour_hex, draw_views, views
from fclm_data.report import plots
from fclm_data.report.collect import REJECT_EXAMPLES, BuildData, Picked
from fclm_data.schema import IMAGE_TOKEN, REGION_TOKEN, SEG_TOKEN

#: Long side of a gallery image.
GALLERY_SIDE = 400

CSS = """
:root { --ink:#1d2330; --muted:#667085; --line:#e3e6ec; --card:#fff; --bg:#f5f6f8; --accent:#3b6ea5; --bad:#c0392b; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink); background:var(--bg); }
header.top { background:#1d2330; color:#fff; padding:22px 32px 18px; }
header.top h1 { margin:0 0 4px; font-size:22px; font-weight:600; }
header.top .sub { color:#b8c0cc; font-size:13px; }
nav.toc { position:sticky; top:0; z-index:2; background:#fff; border-bottom:1px solid var(--line); padding:8px 32px; font-size:13px; }
nav.toc a { margin-right:16px; color:var(--accent); text-decoration:none; }
main { padding:8px 32px 40px; max-width:1500px; }
section { margin-top:26px; }
h2 { font-size:18px; margin:0 0 10px; padding-bottom:4px; border-bottom:2px solid var(--line); }
h3 { font-size:15px; margin:18px 0 8px; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin-top:16px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:10px 16px; min-width:130px; }
.card .v { font-size:22px; font-weight:600; }
.card .k { color:var(--muted); font-size:12px; }
.card.bad .v { color:var(--bad); }
table { border-collapse:collapse; background:var(--card); }
th, td { border-bottom:1px solid var(--line); padding:4px 10px; text-align:left; vertical-align:top; }
th { background:#fafbfc; font-weight:600; font-size:12px; color:#475467; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; }
code, .mono { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12px; }
.muted { color:var(--muted); }
.note { background:#fff7e6; border:1px solid #f5d596; border-radius:6px; padding:6px 10px; margin:8px 0; }
.bad { color:var(--bad); }
details { background:var(--card); border:1px solid var(--line); border-radius:6px; margin:6px 0; padding:4px 10px; }
details summary { cursor:pointer; font-weight:600; }
.plots { display:flex; flex-wrap:wrap; gap:14px; }
.plot { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:8px; margin:0; }
.plot figcaption { font-size:12px; color:var(--muted); max-width:520px; }
.plot img { display:block; max-width:100%; }
.groups a { display:inline-block; margin:3px 6px 3px 0; padding:2px 10px; border:1px solid var(--line); border-radius:12px; background:#fff; color:var(--accent); text-decoration:none; font-size:13px; }
.groups a:hover { background:#eef3fa; }
.gallery { display:grid; grid-template-columns:repeat(auto-fill,minmax(640px,1fr)); gap:14px; }
article.sample { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:10px 12px; }
article.sample > header { font-size:12px; margin-bottom:6px; }
.view { display:grid; grid-template-columns:auto 1fr; gap:12px; margin:8px 0; }
.view figure { margin:0; }
.view figcaption { font-size:11px; color:var(--muted); }
.view img.gallery-img { display:block; max-width:400px; height:auto; border-radius:4px; }
.turn { margin:0 0 6px; white-space:pre-wrap; word-break:break-word; }
.turn .role { font-size:11px; font-weight:600; text-transform:uppercase; color:var(--muted); margin-right:6px; }
.turn.assistant { color:#14532d; }
.tok { border-radius:3px; padding:0 3px; color:#fff; background:var(--c); font-family:ui-monospace,Menlo,monospace; font-size:12px; }
.tok.img { background:#98a2b3; }
.sw { display:inline-block; width:12px; height:12px; border-radius:2px; background:var(--c); vertical-align:-2px; }
table.legend { font-size:12px; width:100%; }
table.legend td { padding:2px 6px; }
table.legend td:first-child { white-space:nowrap; }
"""


def esc(value: object) -> str:
    """HTML-escaped text; None (an unset field, e.g. the recipe file of a ``--source`` build) reads as "-"."""
    return "-" if value is None else html.escape(str(value), quote=True)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_uri(image: Image.Image) -> str:
    """PNG for few-colour (synthetic) images, JPEG where that is much smaller (photos)."""
    png, jpg = io.BytesIO(), io.BytesIO()
    image.save(png, "PNG", compress_level=6)
    image.save(jpg, "JPEG", quality=88)
    if jpg.tell() * 2 < png.tell():
        return data_uri(jpg.getvalue(), "image/jpeg")
    return data_uri(png.getvalue(), "image/png")


def table(headers: list[str], rows: Iterable[list[object]], numeric: Iterable[int] = (), cls: str = "") -> str:
    """``rows`` of already-escaped HTML cells; columns in ``numeric`` are right-aligned."""
    numeric = set(numeric)
    head = "".join(f'<th class="n">{h}</th>' if i in numeric else f"<th>{h}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )  # fmt: skip
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def n(value: int) -> str:
    return f"{value:,}"


def linked_turns(view: dict) -> list[str]:
    """Each turn's escaped text, every <region> / [SEG] tinted by the colour of the region it refers to.

    ``region_inputs`` / ``seg_targets`` index the placeholders in reading order across the whole conversation,
    so the counters run on from one turn to the next.
    """
    regions, segs = iter(view["region_inputs"]), iter(view["seg_targets"])
    return [_linked(turn["content"], regions, segs) for turn in view["conversations"]]


def _linked(content: str, regions, segs) -> str:
    out, i = [], 0
    tokens = (REGION_TOKEN, SEG_TOKEN, IMAGE_TOKEN)
    while i < len(content):
        token = next((t for t in tokens if content.startswith(t, i)), None)
        if token is None:
            j = min((k for k in (content.find(t, i) for t in tokens) if k >= 0), default=len(content))
            out.append(esc(content[i:j]))
            i = j
            continue
        if token == IMAGE_TOKEN:
            out.append(f'<span class="tok img">{esc(token)}</span>')
        else:
            index = next(regions if token == REGION_TOKEN else segs, None)
            tint = "#000" if index is None else colour_hex(index)
            tag = "" if index is None else f"<sub>{index}</sub>"
            out.append(f'<span class="tok" style="--c:{tint}" title="region {index}">{esc(token)}{tag}</span>')
        i += len(token)
    return "".join(out)


def _header(data: BuildData) -> str:
    m = data.manifest
    totals = m.get("totals", {})
    recipe = m.get("recipe", {})
    above = sum(t > data.max_length for t in data.tokens) if data.tokens and data.max_length else None
    cards = [
        ("samples written", n(totals.get("written", data.samples)), False),
        ("shards", n(totals.get("shards", len(m.get("shards", [])))), False),
        ("size", f"{totals.get('bytes', 0) / 1e6:,.1f} MB", False),
        ("sources", n(len(m.get("sources", {}))), False),
        ("rejected records", n(totals.get("rejected", 0) + totals.get("index_rejected", 0)), False),
        ("excluded (eval overlap)", n(totals.get("excluded_eval", 0)), False),
    ]
    if above is not None:
        cards.append((f"samples over {data.max_length:,} tokens", n(above), above > 0))
    if data.unreadable:
        cards.append(("unreadable samples", n(len(data.unreadable)), True))
    card_html = "".join(
        f'<div class="card{" bad" if bad else ""}"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>'
        for k, v, bad in cards
    )
    return (
        f'<header class="top"><h1>fclm build report: {esc(recipe.get("name", "?"))}</h1>'
        f'<div class="sub">{esc(data.out_dir)} &middot; plan {esc(m.get("plan_fingerprint", "?"))} &middot; '
        f"seed {esc(recipe.get('seed', '?'))} &middot; fclm {esc(m.get('fclm_version', '?'))}, "
        f"sample schema v{esc(m.get('schema', '?'))}</div></header>"
        '<nav class="toc"><a href="#build">Build</a><a href="#ledger">Ledger</a>'
        '<a href="#distributions">Distributions</a><a href="#galleries">Galleries</a></nav>'
        f'<main><div class="cards">{card_html}</div>'
    )


def _build_section(data: BuildData, leakage: dict | None) -> str:
    m = data.manifest
    recipe = m.get("recipe", {})
    rows = [
        ["recipe", esc(recipe.get("name"))], ["recipe file", f"<code>{esc(recipe.get('path'))}</code>"],
        ["recipe fingerprint", f"<code>{esc(recipe.get('fingerprint'))}</code>"],
        ["plan fingerprint", f"<code>{esc(m.get('plan_fingerprint'))}</code>"],
        ["seed", esc(recipe.get("seed"))], ["shard size", esc(m.get("shard_size"))],
        ["visual prompts", esc(", ".join(f"{k} {v:,}" for k, v in sorted(data.visual_prompts.items())))],
        ["tasks", esc(", ".join(f"{k} {v:,}" for k, v in sorted(data.tasks.items())))],
    ]  # fmt: skip
    options = [[f"<code>{esc(k)}</code>", f"<code>{esc(v)}</code>"] for k, v in sorted(m.get("options", {}).items())]
    parts = ['<section id="build"><h2>Build</h2><div class="plots">', table(["", ""], rows),
             table(["option", "value"], options), "</div>"]  # fmt: skip
    warnings = m.get("warnings", []) + [w for s in m.get("sources", {}).values() for w in s.get("warnings", [])]
    if warnings:
        parts.append("<h3>Warnings</h3><ul>" + "".join(f"<li>{esc(w)}</li>" for w in warnings) + "</ul>")
    parts.append(_leakage(data, leakage))
    return "".join(parts) + "</section>"


def _leakage(data: BuildData, leakage: dict | None) -> str:
    sources = data.manifest.get("sources", {})
    excluded = {name: s.get("excluded_eval", 0) for name, s in sources.items()}
    parts = ["<h3>Train / eval leakage</h3>"]
    if any(excluded.values()):
        parts.append(f"<p>{n(sum(excluded.values()))} training units were dropped because their image is in an "
                     "evaluation split (<code>--exclude-eval</code>, reason <code>eval_overlap</code>):</p>")  # fmt: skip
        parts.append(table(["source", "excluded"], [[esc(k), n(v)] for k, v in excluded.items() if v], [1]))
    else:
        parts.append('<p class="muted">This build excluded no evaluation images (built without '
                     "<code>--exclude-eval</code>, or nothing overlapped).</p>")  # fmt: skip
    if leakage is not None:
        rows = [[esc(r.get("entry")), n(r.get("units", 0)), n(r.get("leaking_units", 0)), n(r.get("leaking_images", 0)),
                 esc(", ".join(f"{k} {v}" for k, v in r.get("by_reason", {}).items())),
                 esc(", ".join(r.get("eval_entries", [])))] for r in leakage.get("sources", [])]  # fmt: skip
        parts.append(f"<p><code>fclm-data leakage</code> of {esc(leakage.get('recipe'))} against "
                     f"{esc(', '.join(leakage.get('eval', [])))}:</p>")  # fmt: skip
        parts.append(table(["entry", "units", "leaking units", "images", "by", "eval entries"], rows, [1, 2, 3]))
    return "".join(parts)


def _ledger_section(data: BuildData) -> str:
    sources = data.manifest.get("sources", {})
    columns = ["records", "index_rejected", "excluded_eval", "available", "selected", "written", "rejected"]
    rows = []
    for name, s in sources.items():
        reasons = {**s.get("reject_reasons", {})}
        reason_text = ", ".join(f"{k} {v:,}" for k, v in reasons.items())
        dropped = ", ".join(f"{k} {v:,}" for k, v in s.get("dropped_annotations", {}).items())
        rows.append(
            [
                f"<b>{esc(name)}</b>"
                + (f' <span class="muted">({esc(s["source"])})</span>' if s.get("source") not in (None, name) else "")
            ]  # fmt: skip
            + [n(s.get(c, 0)) for c in columns]
            + [esc(reason_text), esc(dropped)]
        )
    totals = data.manifest.get("totals", {})
    rows.append(["<b>total</b>"] + [f"<b>{n(totals.get(c, 0))}</b>" for c in columns] + ["", ""])
    headers = ["entry", "records", "index rejected", "excluded (eval)", "available", "selected", "written",
               "rejected", "reject reasons", "dropped annotations"]  # fmt: skip
    parts = ['<section id="ledger"><h2>Ledger</h2>',
             '<p class="muted">records = available + index rejected + excluded; selected = written + rejected. '
             "Dropped annotations are parts of records that were written without them.</p>",
             table(headers, rows, range(1, 8)), _unreadable(data), _reject_details(data), "</section>"]  # fmt: skip
    return "".join(parts)


def _unreadable(data: BuildData) -> str:
    """Shard samples the scan could not decode: not in any chart or gallery, so listed here (first 20)."""
    if not data.unreadable:
        return ""
    items = "".join(f"<li><code>{esc(u)}</code></li>" for u in data.unreadable[:20])
    more = f"<li>... and {len(data.unreadable) - 20:,} more</li>" if len(data.unreadable) > 20 else ""
    return (
        f'<p class="note bad">{n(len(data.unreadable))} sample(s) in the shards could not be read and are in no '
        f"chart or gallery (<code>fclm-data inspect --strict</code> checks them):</p><ul>{items}{more}</ul>"
    )


def _reject_details(data: BuildData) -> str:
    grouped = data.rejects_by_source()
    if not grouped:
        return '<p class="muted">rejects.jsonl is empty: every selected record was written whole.</p>'
    parts = ["<h3>Reject reasons, with examples</h3>"]
    for source in sorted(grouped):
        reasons = grouped[source]
        total = sum(len(v) for v in reasons.values())
        codes = ", ".join(
            f"{code} {len(lines)}" for (_, code), lines in sorted(reasons.items(), key=lambda kv: -len(kv[1]))
        )
        parts.append(
            f'<details><summary>{esc(source)} &middot; {n(total)} line(s) <span class="muted">'
            f"({esc(codes)})</span></summary>"
        )
        for (stage, code), lines in sorted(reasons.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            examples = [[esc(line.get("record")), f"<code>{esc(line.get('file'))}</code>", esc(line.get("detail"))]
                        for line in lines[:REJECT_EXAMPLES]]  # fmt: skip
            more = f" (first {REJECT_EXAMPLES} shown)" if len(lines) > REJECT_EXAMPLES else ""
            parts.append(
                f"<h4><code>{esc(code)}</code> &middot; stage {esc(stage)} &middot; {n(len(lines))}{more}</h4>"
            )
            parts.append(table(["record", "file", "detail"], examples))
        parts.append("</details>")
    return "".join(parts)


def _plot(svg: str, caption: str) -> str:
    return (f'<figure class="plot"><img alt="{esc(caption)}" src="{data_uri(svg.encode(), "image/svg+xml")}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")  # fmt: skip


def _distributions_section(data: BuildData) -> str:
    parts = ['<section id="distributions"><h2>Distributions</h2>']
    missing = plots.available()
    for note in (data.token_note, missing):
        if note:
            parts.append(f'<p class="note">{esc(note)}</p>')
    figures = []
    if not missing and data.samples:
        if data.tokens:
            above = sum(t > data.max_length for t in data.tokens)
            figures.append(_plot(plots.tokens_histogram(data.tokens, data.max_length),
                                 f"Tokens per sample under the Qwen2.5-VL tokenizer, as the trainer encodes them "
                                 f"(longest view, image pads included): {above:,} of {len(data.tokens):,} above "
                                 f"max_length {data.max_length:,} would be skipped as too_long."))  # fmt: skip
        figures.append(_plot(plots.bar_counts(data.regions, "regions per sample"), "Regions per sample."))
        if data.mask_area:
            figures.append(
                _plot(plots.mask_area_histogram(data.mask_area), "Region mask area as a fraction of its image.")
            )
        figures.append(_plot(plots.image_sizes_scatter(data.image_sizes), "Image sizes (one dot per sample)."))
    parts.append(f'<div class="plots">{"".join(figures)}</div>')
    parts.append(_token_table(data))
    parts.append(_templates(data, missing))
    return "".join(parts) + "</section>"


def _token_table(data: BuildData) -> str:
    if not data.tokens_by_group:
        return ""
    rows = []
    for entry, tokens in sorted(data.tokens_by_group.items()):
        ordered = sorted(tokens)
        above = sum(t > data.max_length for t in tokens)
        rows.append([esc(entry), n(len(tokens)), n(round(statistics.median(ordered))),
                     n(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]), n(ordered[-1]),
                     f'<span class="{"bad" if above else ""}">{n(above)}</span>'])  # fmt: skip
    return "<h3>Tokens per entry</h3>" + table(
        ["entry", "samples", "median", "p95", "max", f"over {data.max_length:,}"], rows, range(1, 6)
    )


def _templates(data: BuildData, missing: str | None) -> str:
    if not data.templates:
        return ""
    parts = ['<h3>Template ids per table</h3><p class="muted">How often each template of a table was drawn; '
             "the choice is a seeded hash, so the bars should be roughly level.</p>"]  # fmt: skip
    if missing:
        rows = [[esc(t), esc(", ".join(f"{k}: {v}" for k, v in _with_unused(t, c).items()))]
                for t, c in sorted(data.templates.items())]  # fmt: skip
        return "".join(parts) + table(["table", "uses per id"], rows)
    figures = []
    for name, counts in sorted(data.templates.items()):
        counts = _with_unused(name, counts)
        unused = sum(1 for v in counts.values() if not v)
        caption = f"{name}: {sum(counts.values()):,} uses of {len(counts)} templates" + (
            f", {unused} never drawn" if unused else ""
        )
        figures.append(_plot(plots.template_bars(name, counts), caption))
    return "".join(parts) + f'<div class="plots">{"".join(figures)}</div>'


def _with_unused(table: str, counts: Counter) -> Counter:
    """The table's every id (``fclm_data.templates.TABLES``), 0 where never drawn, so a skew or a gap shows."""
    from fclm_data.templates import TABLES

    full = Counter({str(i): 0 for i in range(1, len(TABLES.get(table, ())) + 1)})
    full.update(counts)
    return full


def _sample_card(picked: Picked, prompt_notes: set[str]) -> str:
    sample = picked.sample
    drawn, note = draw_views(picked.image, sample, GALLERY_SIDE)
    if note:
        prompt_notes.add(note)
    inputs = {i for _, v in views(sample) for i in v["region_inputs"]}
    targets = {i for _, v in views(sample) for i in v["seg_targets"]}
    image = sample["image"]
    meta = (f'{image["width"]}&times;{image["height"]} &middot; {esc(sample.get("visual_prompt"))} prompt &middot; '
            f'templates {esc(", ".join(sample.get("templates", [])) or "-")} &middot; '
            f'<span class="mono">{esc(image["file_name"])}</span>')  # fmt: skip
    parts = [f'<article class="sample" id="s-{esc(sample["key"])}"><header><code>{esc(sample["key"])}</code> '
             f'<span class="muted">{meta}</span></header>']  # fmt: skip
    for (title, view), im in zip(views(sample), drawn):
        turns = "".join(f'<div class="turn {esc(t["role"])}"><span class="role">{esc(t["role"])}</span>{text}</div>'
                        for t, text in zip(view["conversations"], linked_turns(view)))  # fmt: skip
        parts.append(f'<div class="view"><figure><img class="gallery-img" alt="{esc(sample["key"])} {esc(title)}" '
                     f'width="{im.width}" height="{im.height}" src="{image_uri(im)}"><figcaption>{esc(title)}'
                     f"</figcaption></figure><div>{turns}</div></div>")  # fmt: skip
    rows = []
    for i, region in enumerate(sample["regions"]):
        role = ", ".join(r for r, s in (("&lt;region&gt; input", inputs), ("[SEG] target", targets)) if i in s) or "-"
        text = region.get("caption") or ""
        rows.append([f'<span class="sw" style="--c:{colour_hex(i)}"></span> {i}', esc(region.get("label") or ""),
                     role, esc(text if len(text) <= 160 else text[:157] + "..."),
                     esc([round(v) for v in region["bbox"]]) + (" box only" if region.get("box_only") else "")])  # fmt: skip
    parts.append(table(["", "label", "role", "caption", "bbox"], rows, cls="legend"))
    return "".join(parts) + "</article>"


def _galleries_section(data: BuildData, per_group: int, seed: int) -> str:
    parts = ['<section id="galleries"><h2>Galleries</h2>',
             f'<p class="muted">Per entry and task, {per_group} samples drawn with seed {seed} (the same every run). '
             "A &lt;region&gt; input is shown as the visual prompt the region extractor receives (mask, box, point "
             "or scribble, drawn by the trainer's own code, the region's mask dotted beside it); a [SEG] target as "
             "its mask and box. Colours match the tokens in the conversation and the legend.</p>"]  # fmt: skip
    links = "".join(f'<a href="#g-{esc(e)}-{esc(t)}">{esc(e)} &middot; {esc(t)}</a>' for e, t in data.gallery)
    parts.append(f'<div class="groups">{links}</div>')
    notes = data.prompt_notes
    body = []
    for (entry, task), picked in data.gallery.items():
        cards = "".join(_sample_card(p, notes) for p in picked)
        body.append(f'<h3 id="g-{esc(entry)}-{esc(task)}">{esc(entry)} &middot; {esc(task)} '
                    f'<span class="muted">({len(picked)} of {n(data.group_sizes[(entry, task)])})</span></h3>'
                    f'<div class="gallery">{cards}</div>')  # fmt: skip
    parts += [f'<p class="note">{esc(note)}</p>' for note in sorted(notes)]
    return "".join(parts + body) + "</section>"


def render_page(data: BuildData, per_group: int, seed: int, leakage: dict | None = None) -> str:
    title = f"fclm build report: {data.manifest.get('recipe', {}).get('name', '?')}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<style>{CSS}</style></head><body>"
        + _header(data)
        + _build_section(data, leakage)
        + _ledger_section(data)
        + _distributions_section(data)
        + _galleries_section(data, per_group, seed)
        + "</main></body></html>\n"
    )
