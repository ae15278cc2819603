"""The user turns the predictor asks, rendered from the training templates (``fclm_data.templates``).

Each task uses one template of its table, number 1 (as the paper numbers them) unless configured: a fixed
question keeps inference deterministic, and every one of them was seen in training.

| task | table | template 1 |
|---|---|---|
| RES | ``RES_QUESTIONS`` (LISA's short questions) | "Can you segment the {expression} in this image?" |
| DL-RES | Table 12 DL-RES questions | "<caption>. Please respond with segmentation mask." |
| DLC | Table 12 DLC questions | "Can you provide me with a detailed description of the region in the picture marked by <region>?" |
| ROC | ``ROC_QUESTIONS`` (Fig. 7) | "Please identify the labels of each marked <region> in the image." |
| GCG | GLaMM's ``GCG_QUESTIONS`` | "Could you please give me a detailed description of the image? ..." |
"""

from __future__ import annotations

from dataclasses import dataclass

from fclm_data import templates as T

#: the ways ``segment`` can phrase its text: a referring expression, a detailed caption, or a finished question
SEGMENT_QUERIES = ("res", "dlres", "raw")


@dataclass
class PromptTemplates:
    """1-based template numbers per task (the paper's numbering)."""

    res: int = 1
    dlres: int = 1
    dlc: int = 1
    roc: int = 1
    gcg: int = 1

    def segment(self, text: str, query: str = "res") -> str:
        """The user turn asking for ``text``'s mask, ``query`` one of :data:`SEGMENT_QUERIES`."""
        if query == "res":
            return T.with_image(T.res_question(_pick(T.RES_QUESTIONS, self.res), text))
        if query == "dlres":
            return T.with_image(T.dlres_query(_pick(T.DLRES_QUESTIONS, self.dlres), text))
        if query == "raw":
            return T.with_image(text.strip())
        raise ValueError(f"query must be one of {SEGMENT_QUERIES}, got {query!r}")

    def describe(self) -> str:
        return T.with_image(_pick(T.DLC_QUESTIONS, self.dlc))

    def classify(self) -> str:
        return T.with_image(_pick(T.ROC_QUESTIONS, self.roc))

    def grounded_caption(self) -> str:
        return T.with_image(_pick(T.GCG_QUESTIONS, self.gcg))


def _pick(table: tuple[str, ...], number: int) -> str:
    if not 1 <= number <= len(table):
        raise ValueError(f"template number {number} outside 1..{len(table)}")
    return table[number - 1]
