"""Text-only LLM judges for DLC-Bench: a one-method protocol and an OpenAI-compatible client.

DAM (``NVlabs/describe-anything`` @153ad3d, ``evaluation/eval_model_outputs.py``) serves
Meta-Llama-3.1-8B-Instruct with vLLM and asks it through the OpenAI chat API: one user message,
temperature 0, max_tokens 300, top_p 1, no frequency / presence penalty. Scores are comparable to
DAM's and FCLM's only with that judge; any other model is a different scale.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

JUDGE_BASE_URL_ENV = "FCLM_JUDGE_BASE_URL"
JUDGE_MODEL_ENV = "FCLM_JUDGE_MODEL"
JUDGE_API_KEY_ENV = "FCLM_JUDGE_API_KEY"
DEFAULT_BASE_URL = "http://localhost:9000/v1"  #: DAM's README serves vLLM on port 9000
DEFAULT_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct"


class Judge(Protocol):
    """Answers one judge prompt with text."""

    def __call__(self, prompt: str) -> str: ...


class OpenAIJudge:
    """A chat model behind an OpenAI-compatible endpoint (vLLM, SGLang, OpenAI), sampled as DAM does.

    Arguments left as None come from ``$FCLM_JUDGE_BASE_URL``, ``$FCLM_JUDGE_MODEL`` and
    ``$FCLM_JUDGE_API_KEY``, then from DAM's defaults (a local vLLM needs no real key).
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
    ) -> None:
        from openai import OpenAI

        self.base_url = base_url or os.environ.get(JUDGE_BASE_URL_ENV) or DEFAULT_BASE_URL
        self.model = model or os.environ.get(JUDGE_MODEL_ENV) or DEFAULT_MODEL
        key = api_key or os.environ.get(JUDGE_API_KEY_ENV) or "api_key"
        self.client = OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=max_retries)

    def __call__(self, prompt: str) -> str:
        response = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            temperature=0.0,
            max_tokens=300,
            top_p=1,
            frequency_penalty=0,
            presence_penalty=0,
        )
        return response.choices[0].message.content or ""


class ReplayJudge:
    """Answers from recorded ``prompt -> response`` pairs (a saved run); unknown prompts raise KeyError.

    Lets a run be re-scored without the judge, e.g. from the ``prompts`` / ``responses`` that
    :func:`~fclm_train.eval.dlc_bench.score_dlc_bench` keeps per region.
    """

    def __init__(self, responses: Mapping[str, str]) -> None:
        self.responses = dict(responses)

    def __call__(self, prompt: str) -> str:
        return self.responses[prompt]
