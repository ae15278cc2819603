"""Shared fixtures: a synthetic data root in the official layouts, and builds of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import build

from fclm_data.synthetic import generate_data_root


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every registered family's release, generated once per session (read-only for tests)."""
    return generate_data_root(tmp_path_factory.mktemp("data_root"))


@pytest.fixture(scope="session")
def stage2_build(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stage2")
    build("stage2", data_root, out)
    return out
