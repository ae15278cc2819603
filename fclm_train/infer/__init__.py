"""fclm_train.infer: a trained FCLM as an API (:class:`Predictor`) and the ``fclm-infer`` CLI.

* :mod:`.requests`  image / user turn / regions -> left-padded ``FCLMInputs`` through the trainer's encoding
* :mod:`.generate`  KV-cached greedy (or sampled) generation, [SEG] mask queries, masks at the original size
* :mod:`.prompts`   the training templates each task asks
* :mod:`.predictor` ``Predictor``: segment, describe, classify, grounded_caption, render
* :mod:`.cli`       ``fclm-infer segment | describe | classify | caption``
"""

from .generate import GeneratedRow, GenerationConfig, decode_masks, forced_seg_hidden, generate
from .predictor import GroundedCaption, Prediction, Predictor, encoder_config_for
from .prompts import SEGMENT_QUERIES, PromptTemplates
from .requests import LoadedImage, Query, Request, RequestBuilder, collate_requests, load_image, region_from_input

__all__ = [
    "GeneratedRow", "GenerationConfig", "GroundedCaption", "LoadedImage", "Prediction", "Predictor",
    "PromptTemplates", "Query", "Request", "RequestBuilder", "SEGMENT_QUERIES", "collate_requests", "decode_masks",
    "encoder_config_for", "forced_seg_hidden", "generate", "load_image", "region_from_input",
]  # fmt: skip
