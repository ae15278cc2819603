"""GCG metrics with GLaMM's semantics: output parsing, AP50, greedy mIoU, gated recall, captions."""

from __future__ import annotations

import numpy as np
import pytest

from fclm_data.masks import encode_mask
from fclm_train.eval import captions as captions_module
from fclm_train.eval.gcg import GcgEvaluator, gcg_ap50, greedy_miou, greedy_recall_matches, iou_matrix, parse_gcg_output

needs_java = pytest.mark.skipif(not captions_module.java_available(), reason="METEOR/CIDEr need Java on PATH")


def exact_text_similarity(texts_a, texts_b):
    """1 for identical phrases, 0 otherwise: makes the recall text gate hand-checkable."""
    return np.array([[float(a == b) for b in texts_b] for a in texts_a]).reshape(len(texts_a), len(texts_b))


def test_parse_gcg_output_like_glamm():
    text = "<p> A man </p> [SEG] is riding <p>a brown horse</p> [SEG] on the beach.</s>"
    assert parse_gcg_output(text) == ("A man is riding a brown horse on the beach.", ["A man", "a brown horse"])
    # newlines are deleted, not spaced; quotes at the ends go
    assert parse_gcg_output("'A\n<p> dog </p> [SEG]'") == ("A dog", ["dog"])
    assert parse_gcg_output("no grounding here") == ("no grounding here", [])


def test_greedy_miou_is_greedy_not_optimal_and_ignores_extras():
    # greedy takes 0.9 then is left with 0.1; the optimal assignment would average 0.825
    assert greedy_miou(np.array([[0.9, 0.8], [0.85, 0.1]])) == pytest.approx(0.5)
    assert greedy_miou(np.array([[0.6], [0.0], [0.0]])) == pytest.approx(0.6)  # 2 extra predictions: no penalty
    assert greedy_miou(np.array([[0.5, 0.0], [0.0, 0.0]])) == pytest.approx(0.5)  # stops at IoU 0
    assert greedy_miou(np.zeros((0, 3))) == 0.0


def test_recall_breaks_at_the_first_failed_gate_instead_of_skipping():
    ious = np.array([[0.9, 0.0], [0.0, 0.8]])
    sims = np.array([[0.2, 0.9], [0.9, 0.9]])
    assert greedy_recall_matches(ious, sims) == 0  # a skipping matcher would count (1, 1)
    assert greedy_recall_matches(ious, np.ones((2, 2))) == 2
    assert greedy_recall_matches(np.array([[0.7, 0.0], [0.0, 0.4]]), np.ones((2, 2))) == 1  # IoU gate


def test_recall_swallows_images_whose_best_mask_has_no_phrase():
    # 2 predicted masks, 1 predicted phrase: GLaMM's text_sims lookup raises on the 2nd match
    assert greedy_recall_matches(np.array([[0.9, 0.0], [0.0, 0.8]]), np.ones((2, 1))) == 0
    assert greedy_recall_matches(np.array([[0.9, 0.0], [0.0, 0.3]]), np.ones((2, 1))) == 1  # never looked up


def test_iou_matrix_on_rles_and_arrays(make_mask):
    a, b = make_mask(4, 5, 0, 2, 0, 2), make_mask(4, 5, 1, 3, 1, 3)
    empty = np.zeros((4, 5), bool)
    matrix = iou_matrix([a, encode_mask(b), empty], [a, b, empty])
    np.testing.assert_allclose(matrix, [[1, 1 / 7, 0], [1 / 7, 1, 0], [0, 0, 0]])


def _images(make_mask):
    """Three 10x10 images. 'a': one TP and one FP mask; 'b': one TP mask, wrong phrase; 'c': no prediction."""
    g1, g2 = make_mask(10, 10, 0, 4, 0, 4), make_mask(10, 10, 6, 10, 6, 10)
    false_positive = make_mask(10, 10, 0, 4, 6, 10)
    g3 = make_mask(10, 10, 0, 5, 0, 5)
    return [  # inserted b, a, c: COCOeval ranks tied scores in sorted image-id order
        ("b", "a cat on a mat", ["a cat"], [g3], "a dog on a mat", ["a dog"], [g3]),
        (
            "a",
            "a man rides a cow",
            ["a man", "a cow"],
            [g1, false_positive],
            "a man rides a horse",
            ["a man", "a horse"],
            [g1, g2],
        ),
        ("c", "the sky", [], [], "blue sky", ["sky"], [encode_mask(g3)]),
    ]


def test_ap50_ranks_tied_scores_by_sorted_image_id(make_mask):
    evaluator = GcgEvaluator(text_similarity=exact_text_similarity)
    for image in _images(make_mask):
        evaluator.update(*image)
    # ranked a:TP, a:FP, b:TP over 4 GT: precision 1 up to recall 1/4, then 2/3 up to recall 1/2
    assert gcg_ap50(evaluator.images) == pytest.approx((26 * 1 + 25 * 2 / 3) / 101)
    # (insertion order b, a would rank TP, TP, FP: 51/101)


def test_evaluator_pools_recall_over_the_split(make_mask):
    evaluator = GcgEvaluator(text_similarity=exact_text_similarity)
    for image in _images(make_mask):
        evaluator.update(*image)
    result = evaluator.compute(captions=False)
    assert result["miou"] == pytest.approx((1 + 1 + 0) / 3)  # an image without predictions scores 0
    # one TP ('a man'); in 'b' the mask matches but 'a cat' fails the text gate: 1 of 4 GT phrases
    assert result["recall"] == pytest.approx(1 / 4)  # the mean of per-image recalls would be 1/6
    assert result["n_images"] == 3 and result["n_gt_phrases"] == 4
    assert result["meteor"] is None and result["cider"] is None and "skipped" not in result


def test_evaluator_refuses_duplicates_and_mixed_sizes(make_mask):
    evaluator = GcgEvaluator(text_similarity=exact_text_similarity)
    evaluator.update("a", "x", [], [], "y", ["y"], [make_mask(4, 4, 0, 1, 0, 1)])
    with pytest.raises(ValueError, match="twice"):
        evaluator.update("a", "x", [], [], "y", ["y"], [make_mask(4, 4, 0, 1, 0, 1)])
    with pytest.raises(ValueError, match="sizes"):
        evaluator.update("b", "x", ["p"], [make_mask(5, 4, 0, 1, 0, 1)], "y", ["y"], [make_mask(4, 4, 0, 1, 0, 1)])


def test_caption_metrics_are_skipped_without_java(make_mask, monkeypatch):
    monkeypatch.setattr(captions_module, "java_available", lambda: False)
    with pytest.raises(captions_module.JavaNotFoundError, match="Java"):
        captions_module.caption_scores({"a": ["dog"]}, {"a": "dog"})
    evaluator = GcgEvaluator(text_similarity=exact_text_similarity)
    evaluator.update("a", "dog", ["dog"], [make_mask(4, 4, 0, 2, 0, 2)], "dog", ["dog"], [make_mask(4, 4, 0, 2, 0, 2)])
    result = evaluator.compute()
    assert result["meteor"] is None and result["cider"] is None
    assert "Java" in result["skipped"] and result["ap50"] == pytest.approx(1.0)


@needs_java
def test_cider_is_computed_over_the_whole_split():
    # IDF over the 2 references: idf(dog) = idf(cat) = log 2; each image matches on 1-grams only,
    # so CIDEr-D = 10 * mean_n(1, 0, 0, 0) = 2.5. Alone, an image has log(1) = 0 IDF: CIDEr 0.
    split = captions_module.caption_scores({"a": ["Dog."], "b": ["cat"]}, {"a": "dog", "b": "cat"}, ["cider"])
    assert split["cider"] == pytest.approx(2.5)
    alone = captions_module.caption_scores({"a": ["Dog."]}, {"a": "dog"}, ["cider"])
    assert alone["cider"] == 0.0


@needs_java
@pytest.mark.slow
def test_meteor_is_the_system_level_score():
    """METEOR-1.5 (-l en -norm) on this pair prints segment scores 0.37426 and 0.25197 and a
    system score of 0.30724; COCOEvalCap (and GLaMM) report the system score, not their mean 0.31311."""
    references = {"a": ["A dog runs on the grass."], "b": ["Two cats sleep on a red sofa."]}
    candidates = {"a": "a dog is running on grass", "b": "a cat sleeping on the couch"}
    scores = captions_module.caption_scores(references, candidates, ["meteor"])
    assert scores["meteor"] == pytest.approx(0.30724055663056127, abs=1e-9)
