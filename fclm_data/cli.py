"""``fclm-data``: build, inspect, report and list. Each command lives in ``fclm_data/commands/``."""

from __future__ import annotations

import typer

from fclm_data.commands.build import build
from fclm_data.commands.catalog import demo_data, recipes, sources
from fclm_data.commands.inspect_cmd import inspect
from fclm_data.commands.leakage import leakage
from fclm_data.commands.report import report

app = typer.Typer(
    name="fclm-data",
    help="Official FCLM dataset releases -> WebDataset shards.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.command()(build)
app.command()(inspect)
app.command()(sources)
app.command()(recipes)
app.command("demo-data")(demo_data)
app.command()(leakage)
app.command()(report)

if __name__ == "__main__":
    app()
