"""Fixtures for the model tests: the tiny preset, its tokenizer and a realistic mixed batch.

The batch has a DLC row (``<region>`` -> caption), its DL-RES pair (caption -> ``[SEG]``) and a row with two
regions and two [SEG]s, so every loss part is non-trivial. Everything runs on CPU in well under a second.
"""

from __future__ import annotations

import pytest
import torch

from fclm_train.model import FCLMConfig, build_fclm
from fclm_train.model.testing import ToySample, box_mask, build_tiny_tokenizer, make_inputs, random_image

H, W = 48, 64

# Tiny ops gain nothing from intra-op threads, and on a shared 2-core machine two threads thrash (10x slower).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture
def cfg() -> FCLMConfig:
    return FCLMConfig.preset("tiny")


def toy_samples() -> list[ToySample]:
    image = random_image(H, W, seed=1)
    dog, ball = box_mask((H, W), (5, 5, 30, 40)), box_mask((H, W), (34, 10, 60, 30))
    dlc = ToySample([("user", "<image>\nDescribe <region> in detail."), ("assistant", "A brown dog.")],
                    image, region_masks=[dog])  # fmt: skip
    dlres = ToySample([("user", "<image>\nA brown dog. Please output segmentation mask."),
                       ("assistant", "It is [SEG].")], image, seg_masks=[dog])  # fmt: skip
    multi = ToySample([("user", "<image>\nWhere are <region> and <region>?"), ("assistant", "[SEG] and [SEG].")],
                      random_image(H, W, seed=2), region_masks=[dog, ball], seg_masks=[ball, dog])  # fmt: skip
    return [dlc, dlres, multi]


@pytest.fixture
def make_batch(tokenizer):
    """``make_batch(cfg)`` -> FCLMInputs of :func:`toy_samples`; region 0 (DLC) pairs with [SEG] 0 (DL-RES)."""

    def _make(cfg: FCLMConfig, samples: list[ToySample] | None = None, pairs=((0, 0),), seed: int = 0):
        return make_inputs(samples or toy_samples(), tokenizer, cfg, pairs=list(pairs), seed=seed)

    return _make


@pytest.fixture
def build(tokenizer):
    """``build(cfg, seed=0)`` -> a seeded tiny FCLMModel."""

    def _build(cfg: FCLMConfig, seed: int = 0):
        torch.manual_seed(seed)
        return build_fclm(cfg, tokenizer=tokenizer)

    return _build
