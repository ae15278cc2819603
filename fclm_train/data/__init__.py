"""The trainer's data path: shards -> samples -> model-ready ``FCLMInputs`` batches (see ``loader.py``'s flow).

* ``shards.py``   shard sets (patterns, build directories, weights, counts) and the per-stream shard deal
* ``stages.py``   generator stages: read, mix, shuffle, skip (resume), encode + batch
* ``encode.py``   one sample -> rows: ChatML ids / labels, image tensors, masks (``vision.py``, ``prompts.py``)
* ``collate.py``  rows -> ``FCLMInputs``
* ``loader.py``   ``ShardLoader``: the DataLoader over all of it, with the resume state
* ``tokenizer.py`` the real, the offline and the tiny tokenizer
"""

from importlib import import_module

#: name -> submodule; imported on first use, so ``fclm_train.data.shards`` (stdlib only) loads without torch
_EXPORTS = {"EncoderConfig": "encode", "LoaderBatch": "loader", "LoaderConfig": "loader", "ShardLoader": "loader",
            "ShardSet": "shards", "resolve_shard_set": "shards"}  # fmt: skip
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
