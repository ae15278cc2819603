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

from .encode import EncoderConfig
from .loader import LoaderBatch, LoaderConfig, ShardLoader
from .shards import ShardSet, resolve_shard_set

__all__ = ["EncoderConfig", "LoaderBatch", "LoaderConfig", "ShardLoader", "ShardSet", "resolve_shard_set"]
