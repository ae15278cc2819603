"""DLC-Bench scoring with DAM's semantics: prompts, the parsing cascade, gates and aggregation."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from fclm_train.eval.dlc_bench import (
    judge_prompt,
    load_dlc_bench,
    parse_choice,
    recognition_question,
    score_dlc_bench,
)
from fclm_train.eval.judge import ReplayJudge

CHOICES = [
    "The tail is not mentioned.",
    "The tail is mentioned and is brown.",
    "The tail is mentioned but is not brown.",
    "The dog is not mentioned.",
]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("The tail is not mentioned.", 0),  # exact choice
        ("B. The tail is mentioned and is brown.", 1),  # "X. choice"
        (" C ", 2),  # bare letter
        ("Answer: The dog is not mentioned. ", 3),  # the only choice inside the answer
        ("B. The tail is not mentioned. The dog is not mentioned.", 1),  # "X." prefix beats 2 substrings
        ("The dog is not mentioned. The tail is not mentioned.", 0),  # several substrings: the last one
        ("mentioned and is brown", 1),  # answer inside a single choice
        ("is not mentioned", 0),  # answer inside several choices: the longest
        ("d\nbecause the dog is absent", 3),  # letter then newline
        ("I cannot tell.", None),
        ("   ", None),  # DAM raises on an empty answer
        ("E", None),  # a lone letter past the choices: DAM raises
        ("E. The cat.", None),  # a prefix past the choices: DAM's index raises
    ],
)
def test_parse_choice_cascade(answer, expected):
    assert parse_choice(answer, CHOICES) == expected


def test_parse_choice_prefers_the_longest_choice_at_the_last_position():
    assert parse_choice("red car, maybe", ["red", "red car"]) == 1


def test_recognition_question_wording():
    assert recognition_question("dog")["question"] == (
        "Is it likely that the object in the description is a dog or an object of a similar type? "
        "Again, It does not have to be an exact match."
    )
    assert "is an apple or an object" in recognition_question("apple")["question"]
    assert recognition_question("skis")["question"] == (
        "Is it likely that the objects in the description are skis or objects of a similar type? "
        "Again, It does not have to be an exact match."
    )
    assert "is a bus or an object" in recognition_question("bus")["question"]  # inflect says "bu"


def test_inflect_matches_the_version_dam_scored_with():
    """DAM's released eval cache asks about "wine glass" in the plural: inflect < 7.6 reads
    "glass" as a plural. inflect 7.6 changed that, which changes the prompt and the judge's answer."""
    assert "objects in the description are wine glass" in recognition_question("wine glass")["question"], (
        "pin inflect<7.6 to reproduce DAM's DLC-Bench prompts"
    )


def test_judge_prompt_is_dams_text():
    question = {"question": "Which of the following is applicable to the description?",
                "choices": [["The boats are not mentioned in the description.", 1],
                            ["The boats are mentioned in the description.", -1]], "type": "negative"}  # fmt: skip
    assert judge_prompt("A small boat.", question) == (
        "Answer the multiple-choice question based on the text description of an object in an image. "
        "You need to follow these rules:\n"
        "1. Do not output any reasoning. Do not perform correction. Please output exactly one answer from the "
        "choices for each question. Do not repeat the question.\n"
        "2. There is no need for exact matching. Please choose the closest option based on the description.\n\n"
        "The description is:\nA small boat.\n\n"
        "From the description above, please answer the following question with one of the choices:\n"
        "Which of the following is applicable to the description?\n"
        "A. The boats are not mentioned in the description.\n"
        "B. The boats are mentioned in the description.\n"
    )


class ScriptedJudge:
    """Answers prompts in order from a script and keeps the prompts it saw."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.answers.pop(0)


def _positive(part: str, obj: str, attr: str, value: str, order: list[float]) -> dict:
    texts = {
        0: f"The {part} or the {obj} is not mentioned.",
        0.5: f"The {attr} of the {part} is not mentioned, but the {part} of the {obj} is mentioned.",
        -1: f"The {attr} of the {part} is mentioned in the description but is not {value}.",
        1: f"The {attr} of the {part} is mentioned in the description and is {value}.",
    }
    return {"question": "Which of the following is applicable to the description?",
            "choices": [[texts[s], s] for s in order], "type": "positive"}  # fmt: skip


def _negative(thing: str, order: list[int]) -> dict:
    texts = {
        1: f"The {thing} is not mentioned in the description.",
        -1: f"The {thing} is mentioned in the description.",
    }
    return {"question": "Which of the following is applicable to the description?",
            "choices": [[texts[s], s] for s in order], "type": "negative", "subtype": "salient negative"}  # fmt: skip


@pytest.fixture
def mini_bench(tmp_path: Path) -> Path:
    qa = {
        "r1": [_positive("tail", "dog", "color", "brown", [0, 0.5, -1, 1]),
               _positive("ears", "dog", "shape", "floppy", [1, 0, 0.5, -1]),
               _negative("collar", [1, -1]), _negative("leash", [1, -1])],
        "r2": [_positive("skis", "skis", "length", "long", [1, 0, 0.5, -1]),
               _positive("skis", "skis", "color", "red", [0, 0.5, -1, 1]),
               _negative("poles", [1, -1])],
        "r3": [_positive("bus", "bus", "color", "red", [0, -1, 1, 0.5])],
    }  # fmt: skip
    (tmp_path / "qa.json").write_text(json.dumps(qa))
    (tmp_path / "class_names.json").write_text(json.dumps({"r1": "dog", "r2": "skis", "r3": "bus"}))
    return tmp_path


def test_whole_scoring_on_a_mini_bench(mini_bench):
    qa, class_names = load_dlc_bench(mini_bench)
    captions = {"r1": "A brown dog with a red collar.", "r2": "A snowboard leaning on a wall.", "r3": "A red bus."}
    judge = ScriptedJudge([
        # r1 "dog": recognised
        "A. Yes",
        "D",  # letter -> 1
        "the shape of the ears is not mentioned, but the ears of the dog is mentioned",  # inside a choice -> 0.5
        "B. The collar is mentioned.",  # "X." prefix -> -1
        "Sorry, I cannot answer.",  # unparsable -> 0
        # r2 "skis": not recognised, later scores capped at min(0, s)
        "No",
        "A",  # 1 -> capped to 0
        "The skis or the skis is not mentioned. The color of the skis is mentioned in the description but is not red.",
        # ^ two choices inside: the last one (-1), kept by the cap
        "A. The poles are not mentioned in the description.",  # 1 -> capped to 0
        # r3 "bus": recognised, no negative question
        "Yes",
        "c\nbecause it says red",  # letter + newline -> 1
    ])  # fmt: skip
    result = score_dlc_bench(captions, qa, class_names, judge)
    assert judge.answers == []
    r1, r2, r3 = result.regions
    assert (r1.recognized, r1.positive, r1.negative) == (True, [1, 0.5], [-1, 0])
    assert (r2.recognized, r2.positive, r2.negative) == (False, [0, -1], [0])
    assert (r3.recognized, r3.positive, r3.negative, r3.neg) == (True, [1], [], None)
    assert r1.choices == [0, 3, 2, 1, None]
    assert "is a dog or" in r1.prompts[0] and "are skis or" in r2.prompts[0] and "is a bus or" in r3.prompts[0]
    pos = (0.75 + -0.5 + 1.0) / 3  # every region
    neg = (-0.5 + 0.0) / 2  # regions with negatives only
    assert result.pos == pytest.approx(pos) and result.neg == pytest.approx(neg)
    assert result.avg == pytest.approx((pos + neg) / 2)
    assert result.summary() == {
        "pos": result.pos,
        "neg": result.neg,
        "avg": result.avg,
        "n_regions": 3,
        "n_neg_regions": 2,
    }
    # the kept prompts / responses replay the run without a judge
    replay = ReplayJudge({p: r for region in result.regions for p, r in zip(region.prompts, region.responses)})
    assert score_dlc_bench(captions, qa, class_names, replay).summary() == result.summary()


def test_missing_captions_and_unparsable_recognition(mini_bench):
    qa, class_names = load_dlc_bench(mini_bench)
    qa = {"r3": qa["r3"]}
    with pytest.raises(KeyError, match="r3"):
        score_dlc_bench({}, qa, class_names, ScriptedJudge([]))
    judge = ScriptedJudge(["Yes", "C"])
    result = score_dlc_bench({"r3": "Error: CUDA OOM"}, qa, class_names, judge, default_caption="An object.")
    assert "The description is:\nAn object.\n" in judge.prompts[0] and result.pos == 1.0
    with pytest.raises(ValueError, match="recognition"):
        score_dlc_bench({"r3": "A bus."}, qa, class_names, ScriptedJudge(["Maybe", "C"]))


def _dam_cache_inputs(cache: dict) -> tuple[dict, dict, dict, dict]:
    """qa, class names, captions and prompt -> response, rebuilt from DAM's ``*_eval.json`` cache."""
    qa, class_names, captions, responses = {}, {}, {}, {}
    for key, entry in cache.items():
        if not isinstance(entry, dict):
            continue
        questions = sorted(entry["details_positives"] + entry["details_negatives"], key=lambda d: d["question_index"])
        qa[key] = [{"question": d["question"], "choices": d["choices"], "type": d["type"]} for d in questions]
        recognition = entry["details_recognition"][0]["question"]
        match = re.match(
            r"Is it likely that the objects? in the description (?:are|is an?) (.*) or (?:an )?objects? of", recognition
        )
        class_names[key] = match.group(1)
        captions[key] = entry["pred"]
        responses.update(zip(entry["prompt"], entry["response"]))
    return qa, class_names, captions, responses


@pytest.mark.skipif(
    not os.environ.get("FCLM_DAM_EVAL_CACHE"), reason="set FCLM_DAM_EVAL_CACHE to DAM's dam_3b_v1_eval.json"
)
def test_reproduces_dams_released_eval_cache():
    """DAM's evaluation/model_outputs_cache/dam_3b_v1_eval.json: README reports 0.510 / 0.830 / 0.670."""
    cache = json.loads(Path(os.environ["FCLM_DAM_EVAL_CACHE"]).read_text())
    qa, class_names, captions, responses = _dam_cache_inputs(cache)
    result = score_dlc_bench(captions, qa, class_names, ReplayJudge(responses))  # KeyError if a prompt differs
    assert result.pos == cache["avg_pos"] and result.neg == cache["avg_neg"]
    for region in result.regions:
        assert region.pos == cache[region.key]["score_pos"] and region.neg == cache[region.key]["score_neg"]
