"""Fixtures for the metric tests: a hand-checkable fake embedder and mask builders."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest


class BagOfWordsEmbedder:
    """Case-sensitive bag of whitespace words over a vocabulary built on the fly.

    Cosines are hand-computable: "red car" vs "car" = 1 / sqrt(2); "Car" vs "car" = 0.
    Records every call so tests can check when (and how often) the model runs.
    """

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.calls: list[list[str]] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        for text in texts:
            for word in text.split():
                self.vocab.setdefault(word, len(self.vocab))
        out = np.zeros((len(texts), 64))
        for row, text in enumerate(texts):
            for word in text.split():
                out[row, self.vocab[word]] += 1.0
        return out


@pytest.fixture
def bow_embedder() -> BagOfWordsEmbedder:
    return BagOfWordsEmbedder()


def box_mask(height: int, width: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """A boolean (H, W) mask with rows y0:y1 and columns x0:x1 set."""
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture
def make_mask():
    return box_mask


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 (loaded once per session), or a skip saying how to provide it."""
    pytest.importorskip("sentence_transformers")
    from fclm_train.eval.embedders import ModelNotFoundError, load_minilm

    try:
        return load_minilm()
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))
