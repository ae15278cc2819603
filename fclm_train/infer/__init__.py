"""fclm_train.infer: a trained FCLM as an API (:class:`Predictor`) and the ``fclm-infer`` CLI.

* :mod:`.requests`  image / user turn / regions -> left-padded ``FCLMInputs`` through the trainer's encoding
* :mod:`.generate`  KV-cached greedy (or sampled) generation, [SEG] mask queries, masks at the original size
* :mod:`.prompts`   the training templates each task asks
* :mod:`.predictor` ``Predictor``: segment, describe, classify, grounded_caption, render
* :mod:`.cli`       ``fclm-infer segment | describe | classify | caption``
"""

from importlib import import_module

#: name -> submodule; imported on first use, so ``fclm-infer`` checks its arguments before torch loads
_EXPORTS = {
    "GeneratedRow": "generate", "GenerationConfig": "generate", "decode_masks": "generate",
    "forced_seg_hidden": "generate", "generate": "generate", "GroundedCaption": "predictor",
    "Prediction": "predictor", "Predictor": "predictor", "encoder_config_for": "predictor",
    "SEGMENT_QUERIES": "prompts", "PromptTemplates": "prompts", "LoadedImage": "requests", "Query": "requests",
    "Request": "requests", "RequestBuilder": "requests", "collate_requests": "requests", "load_image": "requests",
    "region_from_input": "requests",
}  # fmt: skip
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
