"""Table 12 verbatim, seeded choices, DL-RES rendering."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from fclm_data.templates import DLC_QUESTIONS, DLRES_ANSWERS, DLRES_QUESTIONS, RES_QUESTIONS, dlres_query, pick

SUPPLEMENT = sorted(Path(__file__).resolve().parents[3].glob("shared/seeds/001_*.txt"))


def test_table12_counts_and_spot_checks() -> None:
    assert (len(DLC_QUESTIONS), len(DLRES_QUESTIONS), len(DLRES_ANSWERS)) == (30, 2, 5)
    assert (
        DLC_QUESTIONS[0]
        == "Can you provide me with a detailed description of the region in the picture marked by <region>?"
    )
    assert DLC_QUESTIONS[29] == "Examine the region <region> closely and share its details."
    assert DLRES_ANSWERS == (
        "It is [SEG].",
        "Sure, [SEG].",
        "Sure, it is [SEG].",
        "Sure, the segmentation result is [SEG].",
        "[SEG].",
    )


def test_table12_text_is_pinned() -> None:
    """Any edit to the Table 12 strings changes this digest (compare with the supplement before updating)."""
    text = "\n".join(DLC_QUESTIONS + DLRES_QUESTIONS + DLRES_ANSWERS)
    assert (
        hashlib.sha256(text.encode()).hexdigest() == "1c938237df94b7a01f7db85be094299176c296ddc94d522c5cfdcd7db675623c"
    )


@pytest.mark.skipif(not SUPPLEMENT, reason="the FCLM supplement text is not beside this checkout")
def test_table12_matches_the_supplement() -> None:
    text = SUPPLEMENT[0].read_text(encoding="utf-8")
    quoted = re.findall(r'- \((\d+)\) "(.+?)"\s*$', text, flags=re.M)
    dlc = [q for n, q in quoted if "<region>" in q]
    assert tuple(dlc) == DLC_QUESTIONS
    answers = [q for n, q in quoted if "[SEG]" in q]
    assert tuple(answers) == DLRES_ANSWERS
    questions = [q.replace("<images>\\n", "") for n, q in quoted if q.startswith("<images>")]
    assert tuple(questions) == DLRES_QUESTIONS


def test_pick_is_seeded_by_key_and_seed() -> None:
    first = [pick("dlc_question", 0, f"k{i}") for i in range(200)]
    assert first == [pick("dlc_question", 0, f"k{i}") for i in range(200)]
    assert len({tid for tid, _ in first}) > 20  # spreads over the table
    assert first != [pick("dlc_question", 1, f"k{i}") for i in range(200)]
    tid, text = first[0]
    assert DLC_QUESTIONS[int(tid.split(":")[1]) - 1] == text


def test_dlres_query_does_not_double_the_full_stop() -> None:
    assert dlres_query(DLRES_QUESTIONS[0], "A red van.") == "A red van. Please respond with segmentation mask."
    assert dlres_query(DLRES_QUESTIONS[1], " A red van ") == "A red van. Please output segmentation mask."


def test_res_questions_are_lisas() -> None:
    assert RES_QUESTIONS[1] == "Please segment the {expression} in this image."
