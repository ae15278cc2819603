"""A word-level byte-BPE for the synthetic scenes' language, and the tiny Qwen2.5-VL directory that carries it.

Why: the ``tiny`` preset's tokenizer is byte-level, so a detailed caption is ~140 tokens, its DL-RES row ~250,
and the ``[SEG]`` that must read "red" sits ~200 positions after it. A BPE fitted to the benchmark's own text
(the scene captions and expressions, every training template) makes words single tokens: rows are ~4x shorter,
steps cheaper, and the text -> ``[SEG]`` routing a much shorter hop. It is a Qwen2 tokenizer (same pre-tokenizer,
byte-level, Qwen's special tokens, FCLM's three) and any text still encodes (bytes are in the vocabulary).

The trainer takes a tokenizer through ``--llm PATH`` (a local Qwen2.5-VL directory): :func:`write_llm_dir` saves a
randomly initialised Qwen2.5-VL of the learnability size with this tokenizer there, and the checkpoints then
carry the tokenizer files (``trainer_state.json``: ``"tokenizer": "files"``), so ``load_model`` / the predictor
need nothing else. Deterministic: the corpus is enumerated, BPE training is deterministic.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from fclm_data import templates as T
from fclm_data.synthetic.scenes import COLOURS, SHAPES, SIZES, TEXTURES, SceneObject

#: the BPE's vocabulary limit (bytes + merges); the corpus saturates below it (~800 entries)
VOCAB_SIZE = 1024
POSITIONS = [f"{v} {h}" for v in ("upper", "middle", "lower") for h in ("left", "centre", "right")]


def corpus() -> list[str]:
    """Every caption / expression / label the scenes produce and every template the sources ask with."""
    texts = []
    for size, colour, shape, texture, position in itertools.product(SIZES, COLOURS, SHAPES, TEXTURES, POSITIONS):
        obj = SceneObject(shape, colour, texture, size, [], [], position)
        texts += [obj.caption(), obj.expression(), f"The {colour} {shape}", f"{texture} {shape} in the {position}"]
    for table in T.TABLES.values():
        texts += [t.replace("{expression}", "the red circle").replace("{sent}", "") for t in table]
    texts += list(SHAPES) + ["You are a helpful assistant."]
    return texts


def build_tokenizer(vocab_size: int = VOCAB_SIZE):
    """A Qwen2 tokenizer whose merges are fitted to :func:`corpus`, with Qwen's and FCLM's special tokens."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from fclm_train.model.llm import add_fclm_tokens
    from fclm_train.model.testing import QWEN_SPECIALS

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip  (Qwen2Tokenizer's own pre-tokenizer: merges learnt here apply there)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)  # fmt: skip
    bpe.train_from_iterator(corpus(), trainer)
    model = json.loads(bpe.to_str())["model"]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]])
    tokenizer.add_tokens(list(QWEN_SPECIALS), special_tokens=True)
    add_fclm_tokens(tokenizer)
    return tokenizer


def llm_overrides(tokenizer) -> dict[str, Any]:
    """``FCLMConfig.llm`` fields that follow the tokenizer (vocabulary and special-token ids)."""
    ids = tokenizer.convert_tokens_to_ids
    return {
        "vocab_size": len(tokenizer), "bos_token_id": ids("<|endoftext|>"), "eos_token_id": ids("<|im_end|>"),
        "pad_token_id": tokenizer.pad_token_id, "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"), "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"), "mask_token_id": ids("<mask>"), "pos_token_id": ids("<pos>"),
        "seg_token_id": ids("[SEG]"),
    }  # fmt: skip


def write_llm_dir(path: Path, model_overrides: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Save a random Qwen2.5-VL (the ``tiny`` preset + ``model_overrides``) and the tokenizer under ``path``.

    Returns the model overrides completed with the tokenizer's ids (what the trainer's config must say).
    """
    import torch

    from fclm_train.model import FCLMConfig, build_fclm

    tokenizer = build_tokenizer()
    overrides = json.loads(json.dumps(model_overrides))
    overrides.setdefault("llm", {}).update(llm_overrides(tokenizer))
    torch.manual_seed(seed)
    model = build_fclm(FCLMConfig.preset("tiny", **overrides), tokenizer=tokenizer)
    path.mkdir(parents=True, exist_ok=True)
    model.qwen.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return overrides
