"""Embedder helpers: cosine maths on hand values, and GLaMM's BERT mean-pool recipe on a real BERT."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from fclm_train.eval.embedders import (
    BertMeanPoolEmbedder,
    ModelNotFoundError,
    cosine_matrix,
    embedding_similarity,
    find_minilm,
    row_cosines,
)


def test_cosines_on_hand_values():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [0.0, 3.0]])
    np.testing.assert_allclose(cosine_matrix(a, b), [[1, 0], [1 / math.sqrt(2)] * 2, [0, 0]])
    np.testing.assert_allclose(row_cosines(a[:2], b), [1.0, 1 / math.sqrt(2)])
    assert cosine_matrix(np.zeros((0, 2)), b).shape == (0, 2)


def test_embedding_similarity_is_gt_by_pred_and_embeds_once(bow_embedder):
    similarity = embedding_similarity(bow_embedder)
    matrix = similarity(["a man", "horse"], ["man", "a horse", "sky"])
    np.testing.assert_allclose(matrix, [[1 / math.sqrt(2), 0.5, 0], [0, 1 / math.sqrt(2), 0]])
    assert len(bow_embedder.calls) == 1
    assert similarity([], ["x"]).shape == (0, 1) and len(bow_embedder.calls) == 1


def test_importing_the_metrics_loads_no_model_library():
    code = (
        "import sys, fclm_train.eval; "
        "print([m for m in ('torch', 'sentence_transformers', 'transformers', 'openai', 'inflect') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bert_embedder_needs_a_local_directory(tmp_path):
    with pytest.raises(ModelNotFoundError, match="bert-base-uncased"):
        BertMeanPoolEmbedder(tmp_path / "absent")


@pytest.mark.slow
def test_bert_mean_pool_matches_sentence_transformers_mean_pooling(minilm):
    """all-MiniLM-L6-v2 is a BertModel whose pooling is the mean over all tokens, [CLS]/[SEP]
    included: GLaMM's recipe applied to its directory must give the same cosines."""
    texts = ["a man riding a horse", "the horse", "blue sky over the sea"]
    bert = BertMeanPoolEmbedder(find_minilm())(texts)
    reference = minilm(texts)
    np.testing.assert_allclose(cosine_matrix(bert, bert), cosine_matrix(reference, reference), atol=1e-5)
