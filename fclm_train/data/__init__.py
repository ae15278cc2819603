"""The trainer's data path: shards -> samples -> model-ready ``FCLMInputs`` batches (see ``loader.py``'s flow).

* ``shards.py``   shard sets (patterns, build directories, weights, counts) and the per-stream shard deal
* ``stages.py``   generator stages: read, mix, shuffle, skip (resume), encode + batch
* ``encode.py``   one sample -> rows: ChatML ids / labels, image tensors, masks (``vision.py``, ``prompts.py``)
* ``collate.py``  rows -> ``FCLMInputs``
* ``loader.py``   ``ShardLoader``: the DataLoader over all of it, with the resume state
* ``tokenizer.py`` the real, the offline and the tiny tokenizer
"""

from .encode import EncoderConfig
from .loader import LoaderBatch, LoaderConfig, ShardLoader
from .shards import ShardSet, resolve_shard_set

__all__ = ["EncoderConfig", "LoaderBatch", "LoaderConfig", "ShardLoader", "ShardSet", "resolve_shard_set"]
