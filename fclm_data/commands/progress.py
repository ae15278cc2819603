"""Rich progress on stderr for long builds: one bar per source (samples/s, ETA) and a summary table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text


class RateColumn(ProgressColumn):
    """Samples per second of a task (rich's speed estimate)."""

    def render(self, task: Any) -> Text:
        return Text(f"{task.speed:,.0f} samples/s" if task.speed else "", style="cyan")


class RichBuildProgress:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.tasks: dict[str, Any] = {}

    def indexing(self, source: str) -> None:
        self.console.print(f"[dim]indexing[/] {source}")

    def planned(self, plan: Any, done: list[Any]) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeRemainingColumn(),
            console=self.console, transient=False,
        )  # fmt: skip
        for sp in plan.sources:
            finished = sum(
                r.per_source.get(sp.name, {}).get("written", 0) + r.per_source.get(sp.name, {}).get("rejected", 0)
                for r in done
            )
            self.tasks[sp.name] = self.progress.add_task(sp.name, total=sp.selected, completed=finished)
        if done:
            self.console.print(f"resuming: {len(done)} shard(s) already finished")
        self.progress.start()

    def note(self, text: str) -> None:
        self.console.print(f"[yellow]note:[/] {text}")

    def shard_done(self, result: Any) -> None:
        assert self.progress is not None
        for name, counts in result.per_source.items():
            self.progress.advance(self.tasks[name], counts["written"] + counts["rejected"])

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def summary_table(manifest: dict[str, Any]) -> Table:
    table = Table(
        title=f"{manifest['recipe']['name']}: {manifest['totals']['written']:,} samples in {manifest['totals']['shards']} shard(s)"
    )
    for column in ("source", "records", "available", "selected", "written", "rejected", "top reasons"):
        table.add_column(column, justify="left" if column in ("source", "top reasons") else "right", no_wrap=column == "source")
    for name, s in manifest["sources"].items():
        reasons = sorted(s["reject_reasons"].items(), key=lambda kv: -kv[1])[:3]
        table.add_row(
            name, f"{s['records']:,}", f"{s['available']:,}", f"{s['selected']:,}", f"{s['written']:,}",
            f"{s['rejected'] + s['index_rejected']:,}", ", ".join(f"{k} {v}" for k, v in reasons),
        )  # fmt: skip
    return table
