"""Shards + recipe weights -> batches of :class:`~fclm_train.model.FCLMInputs`, endless, resumable.

Flow (one *stream* per (rank, worker); ``stream = rank * num_workers + worker``):

1. **shards** -- per shard set and epoch, a seeded shuffle of its shards dealt round-robin to all streams
   (``shards.epoch_items``); tar members are grouped into raw samples (webdataset's reader). Each set is
   re-read, reshuffled, epoch after epoch, so a stream never runs dry.
2. **mix** -- a seeded weighted choice picks the set each next sample comes from (recipe weights).
3. **shuffle** -- a seeded buffer of ``shuffle_buffer`` raw samples.
4. **skip** -- on resume, the raw samples that earlier batches consumed are read past, not decoded.
5. **encode + batch** -- JSON -> ChatML ids / labels, JPEG -> Qwen patches + SAM frame, RLE -> masks
   (``encode.Encoder``); ``micro_batch_size`` samples (or rows) per batch; over-long samples skipped and counted.
6. **collate** -- -> ``FCLMInputs`` in the worker; the batch carries (worker, raw position) for the state.
7. **DataLoader** -- ``batch_size=None``; workers are read round-robin, so batch ``n`` of a rank comes from
   worker ``n % num_workers``.

**Equal batches on every rank.** Streams are endless; the trainer takes exactly ``accumulation`` batches per
optimizer step on every rank, and the run length is fixed up front from the manifest counts
(``steps_per_epoch = ceil(samples / global batch)``). No rank can run out first, so DDP never hangs
(webdataset's ``resampled`` + ``with_epoch`` recipe, with true epochs per set instead of resampling).

**Resume promise.** Batches are a deterministic function of (seed, rank, world size, worker count). The state
records, per worker, how many raw samples its batches consumed and how many batches the rank consumed; a resume
with the same world size and worker count skips exactly those samples and restarts the round-robin at the
worker that was next, so it yields the same batches as an uninterrupted run. With another world size or worker
count the resume is *statistical*: the streams are reseeded from (seed, batches consumed) and a warning says so.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from fclm_train.model.inputs import FCLMInputs

from .collate import collate
from .encode import Encoder, EncoderConfig
from .shards import ShardSet
from .stages import (
    MVPLM_WORD_BUDGET,
    Counted,
    MvplmWordLists,
    batches,
    mix,
    mvplm_vocabulary,
    set_stream,
    shuffle,
    skip,
)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers are forked after the tokenizer is built
log = logging.getLogger(__name__)


@dataclass
class LoaderConfig:
    """How batches are formed (the sample encoding itself is :class:`EncoderConfig`)."""

    micro_batch_size: int = 2  #: paper §S1.1 stage 2: 2 samples per GPU (a pair = one sample = two rows)
    batch_unit: str = "sample"  #: "sample": a paired sample counts once; "row": micro_batch_size counts rows
    num_workers: int = 2  #: DataLoader worker processes per rank (0: in the main process)
    shuffle_buffer: int = 1000  #: raw samples per worker (memory: buffer x ~100-300 KB)
    prefetch_factor: int = 2  #: batches each worker prepares ahead
    seed: int = 0
    mvplm_word_budget: int = MVPLM_WORD_BUDGET  #: MVP-LM samples: words per list after negative padding


@dataclass
class LoaderBatch:
    """One batch plus where it came from (for the resume state and the logs)."""

    inputs: FCLMInputs
    worker: int  #: logical worker that produced it
    consumed: int  #: raw samples that worker has consumed after this batch
    skipped: dict[str, int]  #: encoder skips (cumulative for that worker) by reason
    keys: list[str]
    num_samples: int

    def pin_memory(self) -> LoaderBatch:
        """Called by the DataLoader's pinning thread (``pin_memory=True`` on CUDA)."""
        self.inputs = pin(self.inputs)
        return self


@dataclass
class LoaderState:
    """What ``loader.json`` stores per rank."""

    seed: int
    world_size: int
    num_workers: int
    batches: int = 0  #: batches this rank has consumed
    consumed: dict[int, int] = field(default_factory=dict)  #: logical worker -> raw samples consumed
    skipped: dict[int, dict[str, int]] = field(default_factory=dict)  #: logical worker -> skip counts

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "world_size": self.world_size, "num_workers": self.num_workers,
                "batches": self.batches, "consumed": {str(k): v for k, v in self.consumed.items()},
                "skipped": {str(k): v for k, v in self.skipped.items()}}  # fmt: skip

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> LoaderState:
        return cls(seed=body["seed"], world_size=body["world_size"], num_workers=body["num_workers"],
                   batches=body["batches"], consumed={int(k): v for k, v in body["consumed"].items()},
                   skipped={int(k): v for k, v in body.get("skipped", {}).items()})  # fmt: skip


class StreamDataset(IterableDataset):
    """Steps 1-6 inside one worker; the worker's logical id rotates so a resume restarts the round-robin."""

    def __init__(
        self, sets: list[ShardSet], tokenizer, encoder_config: EncoderConfig, config: LoaderConfig, rank: int,
        world_size: int, start: LoaderState,
    ) -> None:  # fmt: skip
        super().__init__()
        self.sets, self.tokenizer, self.encoder_config, self.config = sets, tokenizer, encoder_config, config
        self.rank, self.world_size, self.start = rank, world_size, start
        self.pad_token_id = _pad_id(tokenizer)
        self.image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")

    @property
    def workers(self) -> int:
        return max(1, self.config.num_workers)

    def __iter__(self) -> Iterator[LoaderBatch]:
        info = get_worker_info()
        worker = ((info.id if info else 0) + self.start.batches) % self.workers  # batch n <- worker n % W
        stream, n_streams = self.rank * self.workers + worker, self.world_size * self.workers
        seed = self.start.seed
        rng = random.Random(f"fclm-mix/{seed}/{stream}")
        sources = [set_stream(s, stream, n_streams, seed, i) for i, s in enumerate(self.sets)]
        raw = mix(sources, [s.weight for s in self.sets], rng)
        raw = Counted(shuffle(raw, self.config.shuffle_buffer, random.Random(f"fclm-shuffle/{seed}/{stream}")))
        skip(raw, self.start.consumed.get(worker, 0))
        encoder = Encoder(self.tokenizer, self.encoder_config)
        encoder.skipped.update(self.start.skipped.get(worker, {}))
        word_lists = MvplmWordLists(seed, stream, mvplm_vocabulary(u for s in self.sets for u in s.urls),
                                    self.config.mvplm_word_budget)  # fmt: skip

        def encode(sample):  # step 5a (MVP-LM word lists) just before encoding; raw.count = its position
            return encoder(word_lists(sample, raw.count))

        for batch in batches(raw, encode, self.config.micro_batch_size, self.config.batch_unit):
            inputs = collate(batch.samples, self.pad_token_id, self.image_token_id)
            yield LoaderBatch(inputs, worker, batch.consumed, dict(encoder.skipped),
                              [s.key for s in batch.samples], len(batch.samples))  # fmt: skip


class ShardLoader:
    """Step 7 and the state: iterate for batches, ``state_dict()`` / ``load_state_dict()`` around checkpoints."""

    def __init__(
        self, sets: list[ShardSet], tokenizer, encoder_config: EncoderConfig, config: LoaderConfig,
        rank: int = 0, world_size: int = 1, pin_memory: bool = False,
    ) -> None:  # fmt: skip
        self.sets, self.tokenizer, self.encoder_config, self.config = sets, tokenizer, encoder_config, config
        self.rank, self.world_size, self.pin_memory = rank, world_size, pin_memory
        self.state = LoaderState(config.seed, world_size, config.num_workers)

    @property
    def num_samples(self) -> int:
        """Samples in one pass over every set (the epoch the trainer's step count is based on)."""
        return sum(s.num_samples for s in self.sets)

    def dataloader(self) -> DataLoader:
        """The torch DataLoader over this rank's streams, starting from the current state."""
        dataset = StreamDataset(self.sets, self.tokenizer, self.encoder_config, self.config, self.rank,
                                self.world_size, _copy_state(self.state))  # fmt: skip
        workers = self.config.num_workers
        return DataLoader(
            dataset, batch_size=None, num_workers=workers, collate_fn=_passthrough, pin_memory=self.pin_memory,
            prefetch_factor=self.config.prefetch_factor if workers else None,
        )  # fmt: skip

    def __iter__(self) -> Iterator[LoaderBatch]:
        for batch in self.dataloader():
            self.state.batches += 1
            self.state.consumed[batch.worker] = batch.consumed
            self.state.skipped[batch.worker] = batch.skipped
            yield batch

    def skipped(self) -> dict[str, int]:
        """Encoder skips by reason, summed over this rank's workers."""
        total: Counter[str] = Counter()
        for counts in self.state.skipped.values():
            total.update(counts)
        return dict(total)

    def state_dict(self) -> dict[str, Any]:
        return self.state.to_dict()

    def load_state_dict(self, body: dict[str, Any]) -> None:
        state = LoaderState.from_dict(body)
        if (state.world_size, state.num_workers) != (self.world_size, self.config.num_workers):
            log.warning(
                "loader state was saved with world_size=%d, num_workers=%d; now %d, %d: resuming statistically "
                "(fresh seeded streams), not with the exact next batches",
                state.world_size, state.num_workers, self.world_size, self.config.num_workers,
            )  # fmt: skip
            state = LoaderState(state.seed * 1_000_003 + state.batches, self.world_size, self.config.num_workers,
                                batches=0)  # fmt: skip
        self.state = state


def _copy_state(state: LoaderState) -> LoaderState:
    return LoaderState.from_dict(state.to_dict())


def _passthrough(batch: LoaderBatch) -> LoaderBatch:
    return batch


def _pad_id(tokenizer) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return pad if pad is not None else tokenizer.convert_tokens_to_ids("<|endoftext|>")


def pin(inputs: FCLMInputs) -> FCLMInputs:
    """Page-locked copies so ``to(device, non_blocking=True)`` overlaps the copy with compute."""
    return FCLMInputs(**{k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in vars(inputs).items()})
