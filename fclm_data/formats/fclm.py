"""The FCLM format (default): the builder's sample as is. Parser: ``<region>`` -> ``region_inputs``, each
``[SEG]`` -> ``seg_targets``, grouped by recovered phrase (:func:`fclm_data.formats.common.fclm_targets`)."""

from __future__ import annotations

from typing import Any

from fclm_data.formats.common import Targets, fclm_targets
from fclm_data.schema import REGION_TOKEN, SEG_TOKEN


def render(sample: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Identity: FCLM shards keep exactly the bytes the builder wrote before formats existed."""
    return sample


def parse(sample: dict[str, Any]) -> Targets:
    return fclm_targets(sample)


def _format():
    from fclm_data.formats import Format

    return Format("fclm", render, parse, fclm_targets, REGION_TOKEN, SEG_TOKEN)


FORMAT = _format()
