"""Fixtures for the trainer tests: shards built from the session's synthetic data root, the tiny preset.

``mixed_build`` holds the stage-1 task kinds (RES with several [SEG], ReasonSeg with ignore masks, region
questions with several <region>, box-only VG regions) in shards of 4 samples; ``stage2_build`` (the top-level
fixture) the paired DAM samples.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import build

# Tiny ops gain nothing from intra-op threads, and on a shared 2-core machine two threads thrash.
torch.set_num_threads(1)

MIXED_SOURCES = ["refcoco", "reasonseg", "osprey_short_form", "vg_grit"]


@pytest.fixture(scope="session")
def mixed_build(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mixed")
    build(MIXED_SOURCES, data_root, out, shard_size=4)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from fclm_train.data.tokenizer import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_cfg():
    from fclm_train.model import FCLMConfig

    return FCLMConfig.preset("tiny")


@pytest.fixture(scope="session")
def encoder_config(tiny_cfg):
    from fclm_train.data.encode import EncoderConfig

    return EncoderConfig(side=tiny_cfg.image_long_side, region_text=tiny_cfg.region_token_text)
