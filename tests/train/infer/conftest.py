"""Fixtures for the inference tests: a tiny FCLM with decisive language weights, a predictor, a scripted head.

The tiny preset's initial LM weights (std 0.02) give nearly flat logits, under which a wrong position or a
stale cache would hardly change anything; :func:`sharpen` redraws them at std 0.2 so that such bugs move the
logits by O(1) and the equality tests can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fclm_train.data.tokenizer import tiny_tokenizer
from fclm_train.infer import GenerationConfig, Predictor
from fclm_train.model import FCLMConfig, FCLMModel, build_fclm


def sharpen(model: FCLMModel, std: float = 0.2, seed: int = 0) -> FCLMModel:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.qwen.model.language_model.parameters():
            if param.ndim == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def model(tokenizer) -> FCLMModel:
    torch.manual_seed(0)
    return sharpen(build_fclm(FCLMConfig.preset("tiny"), tokenizer=tokenizer)).eval()


@pytest.fixture
def predictor(model, tokenizer) -> Predictor:
    return Predictor(model, tokenizer, generation=GenerationConfig(max_new_tokens=64))


@pytest.fixture
def image() -> np.ndarray:
    """50 x 90: neither square nor the SAM frame's size, so resizing and padding both matter."""
    return np.random.default_rng(0).integers(0, 256, (50, 90, 3), dtype=np.uint8)


class ScriptedHead(nn.Module):
    """Wraps ``lm_head``: call i adds a large logit to ``script[i]`` (then the real argmax resumes).

    Makes a random model say a chosen answer while every hidden state stays the model's own.
    """

    def __init__(self, head: nn.Module, script: list[int]) -> None:
        super().__init__()
        self.head, self.script, self.calls = head, list(script), 0

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden)
        if self.calls < len(self.script):
            logits = logits.clone()
            logits[..., self.script[self.calls]] += 1e4
        self.calls += 1
        return logits


@pytest.fixture
def script(model, tokenizer):
    """``script("text")`` makes the model generate ``text`` then <|im_end|> (text tokenised as the answer is)."""

    def _script(text: str) -> list[int]:
        ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
        model.qwen.lm_head = ScriptedHead(model.qwen.lm_head, ids)
        return ids

    return _script
