"""DLC-Bench scoring: a text-only judge answers multiple-choice questions about each caption.

Reproduces DAM (``NVlabs/describe-anything`` @153ad3d, ``evaluation/eval_model_outputs.py``):

1. Per region, a recognition question comes first: is the described object likely "a/an {class}"
   (plural wording when ``inflect`` says the class is plural; "bus" is special-cased singular).
2. Every question becomes one judge prompt (:data:`JUDGE_PROMPT`, DAM's wording) with lettered
   choices; the answer is parsed by :func:`parse_choice` (exact / letter, unique substring,
   ``X.`` prefix, last-then-longest substring, answer inside a choice, letter + newline).
3. A parsed choice scores what ``qa.json`` gives it (positive: 1 / 0.5 / 0 / -1; negative:
   1 / -1 / 0); an unparsable answer scores 0. A "No" to recognition caps every later score at
   ``min(0, s)``.
4. Region Pos / Neg = mean of its positive / negative scores; final Pos = mean over regions,
   Neg = mean over regions that have negatives, Avg = (Pos + Neg) / 2.

Where DAM's parser raises instead of answering (an empty answer, a lone letter or an ``X.`` prefix
beyond the choices) the answer counts as unparsable here. An unparsable recognition answer raises,
as in DAM.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fclm_train.eval.judge import Judge

if TYPE_CHECKING:  # inflect takes ~2 s to import; it is loaded when a question is built
    import inflect

# DAM's ``prompt_eval``, verbatim: the prompt is part of the metric.
JUDGE_PROMPT = """Answer the multiple-choice question based on the text description of an object in an image. You need to follow these rules:
1. Do not output any reasoning. Do not perform correction. Please output exactly one answer from the choices for each question. Do not repeat the question.
2. There is no need for exact matching. Please choose the closest option based on the description.

The description is:
{pred_caption}

From the description above, please answer the following question with one of the choices:
{question_text_str}
"""
LABELS = "abcde"
RECOGNITION_CHOICES = [["Yes", "correct"], ["No", "incorrect"]]
QUESTION_TYPES = ("recognition", "positive", "negative")

Question = Mapping  #: {"question": str, "choices": [[text, score], ...], "type": str}


def _inflect_engine() -> inflect.engine:
    import inflect

    return inflect.engine()


def is_plural(class_name: str, engine: inflect.engine) -> bool:
    """DAM's plural test: ``singular_noun`` is not False, except for "bus"."""
    if class_name == "bus":
        return False
    return engine.singular_noun(class_name) is not False


def recognition_question(class_name: str, engine: inflect.engine | None = None) -> dict:
    """The Yes/No question asked before a region's own questions."""
    engine = engine or _inflect_engine()
    if is_plural(class_name, engine):
        text = (
            f"Is it likely that the objects in the description are {class_name} or objects of a similar type? "
            "Again, It does not have to be an exact match."
        )
    else:
        text = (
            f"Is it likely that the object in the description is {engine.a(class_name)} or an object of a "
            "similar type? Again, It does not have to be an exact match."
        )
    return {"question": text, "choices": RECOGNITION_CHOICES, "type": "recognition"}


def judge_prompt(caption: str, question: Question) -> str:
    """The judge prompt for one question: the question, then ``A. choice`` lines."""
    if len(question["choices"]) > len(LABELS):
        raise ValueError(f"{len(question['choices'])} choices; DAM's format labels at most {len(LABELS)}")
    lines = [question["question"]]
    lines += [f"{LABELS[i].upper()}. {text}" for i, (text, _score) in enumerate(question["choices"])]
    return JUDGE_PROMPT.format(pred_caption=caption, question_text_str="\n".join(lines).strip())


def parse_choice(answer: str, choices: Sequence[str]) -> int | None:
    """DAM's ``parse_pred``: the chosen choice's index, or None when nothing parses."""
    pred = answer.strip().lower()
    if not pred:
        return None
    substrings = []  # (index, position in pred, length) of choices found inside the answer
    for index, choice in enumerate(choices):
        choice = choice.strip().lower()
        if pred in (choice, f"{LABELS[index]}. {choice}", LABELS[index]):
            return index
        if choice in pred:
            substrings.append((index, pred.index(choice), len(choice)))
    if len(substrings) == 1:
        return substrings[0][0]
    if pred[0] in LABELS and (len(pred) == 1 or pred[1] == "."):
        return _label_index(pred, choices)
    if substrings:
        last = max(position for _, position, _ in substrings)
        return max((s for s in substrings if s[1] == last), key=lambda s: s[2])[0]
    containing = [(index, len(c.strip())) for index, c in enumerate(choices) if pred in c.strip().lower()]
    if containing:
        return max(containing, key=lambda c: c[1])[0]
    if pred[0] in LABELS and pred[1] == "\n":
        return _label_index(pred, choices)
    return None


def _label_index(pred: str, choices: Sequence[str]) -> int | None:
    """The index a leading letter names; None for a lone letter or one past the choices (DAM raises)."""
    index = LABELS.index(pred[0])
    return index if len(pred) > 1 and index < len(choices) else None


@dataclass
class RegionScore:
    """One region's judged questions (recognition first) and its scores."""

    key: str
    recognized: bool
    positive: list[float]
    negative: list[float]
    prompts: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    choices: list[int | None] = field(default_factory=list)  #: parsed choice per prompt

    @property
    def pos(self) -> float:
        return sum(self.positive) / len(self.positive)

    @property
    def neg(self) -> float | None:
        return sum(self.negative) / len(self.negative) if self.negative else None


def score_region(
    key: str,
    caption: str,
    class_name: str,
    questions: Sequence[Question],
    judge: Judge,
    engine: inflect.engine | None = None,
) -> RegionScore:
    """Asks the judge every question of one region and scores the answers."""
    if not any(q["type"] == "positive" for q in questions):
        raise ValueError(f"region {key}: no positive question (DAM divides by their count)")
    asked = [recognition_question(class_name, engine), *questions]
    region = RegionScore(key, recognized=True, positive=[], negative=[])
    for question in asked:
        prompt = judge_prompt(caption, question)
        response = judge(prompt)
        choice = parse_choice(response, [text for text, _ in question["choices"]])
        region.prompts.append(prompt)
        region.responses.append(response)
        region.choices.append(choice)
        _record(region, question, choice, response)
    return region


def _record(region: RegionScore, question: Question, choice: int | None, response: str) -> None:
    """Applies one parsed answer: recognition sets the cap that every later question obeys."""
    if question["type"] == "recognition":
        if choice is None:
            raise ValueError(f"region {region.key}: unparsable recognition answer {response!r}")
        region.recognized = question["choices"][choice][1] == "correct"
        return
    score = question["choices"][choice][1] if choice is not None else 0
    if not region.recognized:
        score = min(0, score)
    if question["type"] == "positive":
        region.positive.append(score)
    elif question["type"] == "negative":
        region.negative.append(score)
    else:
        raise ValueError(f"region {region.key}: question type {question['type']!r} not in {QUESTION_TYPES}")


@dataclass
class DlcBenchResult:
    pos: float  #: mean over regions of their positive score (fraction; x100 for tables)
    neg: float | None  #: mean over regions with negatives of their negative score
    avg: float | None  #: (pos + neg) / 2
    regions: list[RegionScore]

    def summary(self) -> dict[str, float | int | None]:
        n_neg = sum(r.neg is not None for r in self.regions)
        return {
            "pos": self.pos,
            "neg": self.neg,
            "avg": self.avg,
            "n_regions": len(self.regions),
            "n_neg_regions": n_neg,
        }


def score_dlc_bench(
    captions: Mapping[str, str],
    qa: Mapping[str, Sequence[Question]],
    class_names: Mapping[str, str],
    judge: Judge,
    default_caption: str | None = None,
) -> DlcBenchResult:
    """Scores model captions on DLC-Bench.

    Args:
        captions: region key -> the model's description of the masked region.
        qa: ``qa.json``: key -> questions ``{"question", "choices": [[text, score], ...], "type"}``.
        class_names: ``class_names.json``: key -> class name for the recognition question.
        judge: the text-only judge (:class:`~fclm_train.eval.judge.OpenAIJudge` for DAM's setup).
        default_caption: used for a missing key or a caption starting with ``"Error:"``; without
            it such a region raises, as in DAM.
    """
    engine = _inflect_engine()
    regions = []
    for key in qa:
        caption = captions.get(key)
        if caption is None or caption.startswith("Error:"):
            if default_caption is None:
                raise KeyError(f"no usable caption for region {key} and no default_caption")
            caption = default_caption
        regions.append(score_region(key, caption, class_names[key], qa[key], judge, engine))
    if not regions:
        raise ValueError("qa has no region")
    pos = sum(r.pos for r in regions) / len(regions)
    negatives = [r.neg for r in regions if r.neg is not None]
    neg = sum(negatives) / len(negatives) if negatives else None
    return DlcBenchResult(pos, neg, (pos + neg) / 2 if neg is not None else None, regions)


def load_dlc_bench(root: str | Path) -> tuple[dict, dict]:
    """``(qa, class_names)`` from a DLC-Bench checkout (``qa.json``, ``class_names.json``)."""
    root = Path(root)
    qa = json.loads((root / "qa.json").read_text())
    class_names = json.loads((root / "class_names.json").read_text())
    missing = [key for key in qa if key not in class_names]
    if missing:
        raise ValueError(f"class_names.json lacks {len(missing)} qa keys, e.g. {missing[:3]}")
    return qa, class_names
