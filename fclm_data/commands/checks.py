"""Plain user errors, caught before any work: one ``error: ...`` line on stderr naming the thing and the reason,
exit status 2, no traceback. Shared by the ``fclm-data``, ``fclm-eval`` and ``fclm-infer`` commands."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import typer

EXIT_USAGE = 2  #: a user error (as click's usage errors)


def fail(message: str) -> NoReturn:
    """Print ``error: message`` (one line) and exit 2."""
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    raise typer.Exit(EXIT_USAGE)


def positive(option: str, value: int | float | None) -> None:
    """``--shard-size 0`` and the like: a count or size that must be >= 1 (None: not given)."""
    if value is not None and value < 1:
        fail(f"{option} must be a positive number, got {value}")


def one_of(option: str, value: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        fail(f"{option} {value!r} is not one of {', '.join(choices)}")


def output_directory(option: str, path: Path) -> None:
    """An output directory may exist (as a directory) or not yet; a file in its place is an error."""
    if path.exists() and not path.is_dir():
        fail(f"{option} {path} is a file, not a directory")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                fail(f"{option} {path}: {parent} is a file, not a directory")
            break


def output_file(option: str, path: Path) -> None:
    """An output file: not an existing directory, and its parent (created if missing) not a file."""
    if path.is_dir():
        fail(f"{option} {path} is a directory; give a file name")
    output_directory(option, path.parent)


def existing_file(option: str, path: Path) -> None:
    if not path.exists():
        fail(f"{option} {path} does not exist")
    if not path.is_file():
        fail(f"{option} {path} is not a file")


def existing_directory(option: str, path: Path) -> None:
    if not path.exists():
        fail(f"{option} {path} does not exist")
    if not path.is_dir():
        fail(f"{option} {path} is not a directory")
