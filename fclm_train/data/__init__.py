"""The trainer's data path: shards -> samples -> compact batches -> ``FCLMInputs`` on the device (``loader.py``'s flow).

* ``shards.py``   shard sets (patterns, build directories, weights, counts) and the per-stream shard deal
* ``stages.py``   generator stages: read, mix, shuffle, skip (resume), encode + batch
* ``encode.py``   one sample -> rows: ChatML ids / labels, uint8 pixels, bit-packed masks and prompt specs
* ``collate.py``  rows -> ``device.CompactBatch`` (in the loader workers)
* ``device.py``   ``CompactBatch.prepare(device)``: Qwen patches, SAM frames, frame masks on the model's device
* ``vision.py``, ``prompts.py``  decoding, sizes and the CPU reference of the device step
* ``loader.py``   ``ShardLoader``: the DataLoader over all of it, with the resume state
* ``tokenizer.py`` the real, the offline and the tiny tokenizer
"""

import importlib

#: Loaded on first use (PEP 562): ``loader`` imports the model and transformers, which a user of ``encode`` or
#: ``tokenizer`` alone (``fclm-data report``'s token counts) should not wait for.
_EXPORTS = {
    "EncoderConfig": "encode", "LoaderBatch": "loader", "LoaderConfig": "loader", "ShardLoader": "loader",
    "ShardSet": "shards", "resolve_shard_set": "shards",
}  # fmt: skip
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
