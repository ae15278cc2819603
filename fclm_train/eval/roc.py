"""Referring object classification (ROC): Semantic Similarity (SS) and Semantic IoU (sIoU).

Reproduces Osprey (``CircleRadon/Osprey`` @deb0e57, ``osprey/eval/lvis_paco_eval.py``), which DAM
and FCLM follow on LVIS / PACO:

* prediction: strip, drop a trailing stop string, strip; if it holds ``:``, keep
  ``split(':')[1]`` (the text between the first and second colon); replace ``.``, ``:``, ``,``
  with spaces;
* GT category: replace ``_`` and ``:`` with spaces (PACO ``obj:part`` -> ``obj part``);
* SS = cosine of the two all-MiniLM-L6-v2 embeddings (case preserved);
* sIoU = ``|P & G| / |P | G|`` over the lower-cased whitespace word sets (no stemming);
* both micro-averaged over objects.

Strings are embedded in batches rather than one by one; that moves cosines by float noise only.
"""

from __future__ import annotations

import numpy as np

from fclm_train.eval.embedders import Embedder, load_minilm, row_cosines


def normalize_roc_prediction(text: str, stop_str: str | None = None) -> str:
    """Osprey's cleaning of a generated category name."""
    text = text.strip()
    if stop_str and text.endswith(stop_str):
        text = text[: -len(stop_str)]
    text = text.strip()
    if ":" in text:
        text = text.split(":")[1]
    return text.replace(".", " ").replace(":", " ").replace(",", " ")


def normalize_roc_category(category: str) -> str:
    """Osprey's cleaning of a GT category name."""
    return category.replace("_", " ").replace(":", " ")


def semantic_iou(prediction: str, category: str) -> float:
    """Word-set IoU of two normalised strings, lower-cased; 0 when both are empty."""
    pred_words, gt_words = set(prediction.lower().split()), set(category.lower().split())
    union = pred_words | gt_words
    return len(pred_words & gt_words) / len(union) if union else 0.0


class RocMeter:
    """Accumulates SS and sIoU over objects; the embedder is needed (and loaded) only in compute()."""

    def __init__(self, embedder: Embedder | None = None) -> None:
        self.embedder = embedder
        self.predictions: list[str] = []
        self.categories: list[str] = []
        self.siou_sum = 0.0

    def update(self, prediction: str, category: str, stop_str: str | None = None) -> float:
        """Adds one object from the raw generated text and raw GT category; returns its sIoU."""
        pred, gt = normalize_roc_prediction(prediction, stop_str), normalize_roc_category(category)
        siou = semantic_iou(pred, gt)
        self.predictions.append(pred)
        self.categories.append(gt)
        self.siou_sum += siou
        return siou

    def compute(self) -> dict[str, float | int]:
        """``{"ss", "siou"}`` as fractions (micro-averaged over objects) and ``n``."""
        n = len(self.predictions)
        if n == 0:
            raise ValueError("RocMeter.compute() before any update()")
        if self.embedder is None:
            self.embedder = load_minilm()
        return {"ss": float(self._cosines().mean()), "siou": self.siou_sum / n, "n": n}

    def _cosines(self) -> np.ndarray:
        """Per-object cosine, embedding each distinct string once."""
        texts = sorted(set(self.predictions) | set(self.categories))
        index = {text: i for i, text in enumerate(texts)}
        embeddings = self.embedder(texts)
        pred_rows = embeddings[[index[t] for t in self.predictions]]
        gt_rows = embeddings[[index[t] for t in self.categories]]
        return row_cosines(pred_rows, gt_rows)
