"""fclm_train.infer: a trained FCLM as an API (:class:`Predictor`) and the ``fclm-infer`` CLI.

* :mod:`.requests`  image / user turn / regions -> left-padded ``FCLMInputs`` through the trainer's encoding
* :mod:`.generate`  KV-cached greedy (or sampled) generation, [SEG] mask queries, masks at the original size
* :mod:`.prompts`   the training templates each task asks
* :mod:`.predictor` ``Predictor``: segment, describe, classify, grounded_caption, render
* :mod:`.cli`       ``fclm-infer segment | describe | classify | caption``
"""

import sys
from importlib import import_module
from types import ModuleType

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
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


class _Package(ModuleType):
    """Loading a submodule binds it on its package; ``generate`` is the function (as when imported eagerly)."""

    def __setattr__(self, name: str, value) -> None:
        if name == "generate" and isinstance(value, ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
