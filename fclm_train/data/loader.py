"""Shards + recipe weights -> batches of :class:`~fclm_train.model.FCLMInputs`, endless, resumable.

Flow (one *stream* per (rank, worker); ``stream = rank * num_workers + worker``):

1. **shards** -- per shard set and epoch, a seeded shuffle of its shards dealt round-robin to all streams
   (``shards.epoch_items``); tar members are grouped into raw samples (webdataset's reader). Each set is
   re-read, reshuffled, epoch after epoch, so a stream never runs dry.
2. **mix** -- a seeded weighted choice picks the set each next sample comes from (recipe weights).
3. **shuffle** -- a seeded buffer of ``shuffle_buffer`` raw samples.
4. **skip** -- on resume, the raw samples that earlier batches consumed are read past, not decoded.
5. **encode + batch** -- JSON -> ChatML ids / labels, JPEG -> uint8 pixels, RLE -> bit-packed masks at their
   stored size (``encode.Encoder``); ``micro_batch_size`` samples (or rows) per batch; over-long samples skipped
   and counted.
6. **collate** -- -> a compact ``device.CompactBatch`` in the worker; the batch carries (worker, raw position) for
   the state. The training step turns it into ``FCLMInputs`` on the model's device (``CompactBatch.prepare``).
7. **DataLoader** -- ``batch_size=None``; workers are read round-robin, so batch ``n`` of a rank comes from
   worker ``n % num_workers``.

**Equal batches on every rank.** Streams are endless; the trainer takes exactly ``accumulation`` batches per
optimizer step on every rank, and the run length is fixed up front from the manifest counts
(``steps_per_epoch = ceil(samples / global batch)``). No rank can run out first, so DDP never hangs
(webdataset's ``resampled`` + ``with_epoch`` recipe, with true epochs per set instead of resampling).

**Nothing lost silently.** Every sample that does not reach a batch is counted by reason, per worker, and the
counts travel with each batch out of the DataLoader workers (``LoaderBatch.skipped`` / ``read``):
``shard_read_error``, ``truncated_shard``, ``missing_samples`` (a shard gave fewer samples than its manifest
lists; ``extra_samples`` counts the opposite, not a loss) from the reader (``stages.ReadLedger``), and
``decode_error``, ``too_long``, ``token_mismatch``, ``image_size``, ``malformed_sample``, ``format_mismatch`` (a
sample of another format than ``EncoderConfig.format``: a manifest-less shard of a REF-VLM / MVP-LM build) from
the encoder. :meth:`ShardLoader.data_stats` sums them over the rank's workers; :func:`rotten_data` says when the
skipped fraction is past ``max_skip_fraction`` (the trainer stops the run with that reason); a stream whose last
:data:`SKIPS_IN_A_ROW` samples were all skipped raises :class:`ShardError` with its counts (no batch can come).

**Other formats.** With ``EncoderConfig(format="refvlm" | "mvplm")`` (and the format's tokens added to the
tokenizer, ``tokenizer.add_format_tokens``) the same loader serves REF-VLM / MVP-LM builds: batches carry
``CompactBatch.targets`` (``device.FormatTargets``: boxes, classes, output occurrences, MVP-LM word token spans).
Every set must be a build of that format (``manifest.json`` ``format``); another is refused at construction.

**Resume promise.** Batches are a deterministic function of (seed, rank, world size, worker count). The state
records, per worker, how many raw samples its batches consumed and how many batches the rank consumed; a resume
with the same world size and worker count skips exactly those samples and restarts the round-robin at the
worker that was next, so it yields the same batches as an uninterrupted run. With another world size or worker
count the resume is *statistical*: the streams are reseeded from (seed, batches consumed) and a warning says so.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from fclm_train.config import DataConfig

from .collate import collate
from .device import CompactBatch
from .encode import Encoder, EncoderConfig
from .shards import ShardError, ShardSet, require_format
from .stages import (
    EXTRA_SAMPLES,
    READ_REASONS,
    Counted,
    MvplmWordLists,
    ReadLedger,
    batches,
    mix,
    mvplm_vocabulary,
    set_stream,
    shuffle,
    skip,
)
from .tokenizer import format_token_ids

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers are forked after the tokenizer is built
log = logging.getLogger(__name__)


@dataclass
class LoaderConfig:
    """How batches are formed (the sample encoding itself is :class:`EncoderConfig`)."""

    #: the train config's ``data`` fields own these defaults (:meth:`from_data` builds one from them)
    micro_batch_size: int = DataConfig.micro_batch_size  #: samples per batch (a pair = one sample = two rows)
    batch_unit: str = DataConfig.batch_unit  #: "sample": a paired sample counts once; "row": batches count rows
    num_workers: int = DataConfig.num_workers  #: DataLoader worker processes per rank (0: in the main process)
    shuffle_buffer: int = DataConfig.shuffle_buffer  #: raw samples per worker (memory: buffer x ~100-300 KB)
    prefetch_factor: int = DataConfig.prefetch_factor  #: batches each worker prepares ahead
    seed: int = 0
    mvplm_word_budget: int = DataConfig.mvplm_word_budget  #: MVP-LM samples: words per list after negative padding

    @classmethod
    def from_data(cls, data: DataConfig, seed: int, **overrides: Any) -> LoaderConfig:
        """The train config's ``data`` section as a loader config (``overrides``: e.g. validation's batch)."""
        fields = {f.name: getattr(data, f.name) for f in dataclasses.fields(cls) if hasattr(data, f.name)}
        return cls(**{**fields, "seed": seed, **overrides})


@dataclass
class LoaderBatch:
    """One batch plus where it came from (for the resume state and the logs)."""

    inputs: CompactBatch  #: ``inputs.prepare(device)`` -> ``FCLMInputs``
    worker: int  #: logical worker that produced it
    consumed: int  #: raw samples that worker has consumed after this batch
    skipped: dict[str, int]  #: samples that worker lost or skipped so far (reader and encoder), by reason
    keys: list[str]
    num_samples: int
    read: int = 0  #: raw samples that worker's reader has delivered so far

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
    read: dict[int, int] = field(default_factory=dict)  #: logical worker -> raw samples its reader delivered

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "world_size": self.world_size, "num_workers": self.num_workers,
                "batches": self.batches, "consumed": {str(k): v for k, v in self.consumed.items()},
                "skipped": {str(k): v for k, v in self.skipped.items()},
                "read": {str(k): v for k, v in self.read.items()}}  # fmt: skip

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> LoaderState:
        return cls(seed=body["seed"], world_size=body["world_size"], num_workers=body["num_workers"],
                   batches=body["batches"], consumed={int(k): v for k, v in body["consumed"].items()},
                   skipped={int(k): v for k, v in body.get("skipped", {}).items()},
                   read={int(k): v for k, v in body.get("read", {}).items()})  # fmt: skip


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
        ledger = ReadLedger()  # rebuilt by the fast-forward below: the same shards are read again
        sources = [set_stream(s, stream, n_streams, seed, i, ledger) for i, s in enumerate(self.sets)]
        raw = mix(sources, [s.weight for s in self.sets], rng)
        raw = Counted(shuffle(raw, self.config.shuffle_buffer, random.Random(f"fclm-shuffle/{seed}/{stream}")))
        skip(raw, self.start.consumed.get(worker, 0))
        encoder = Encoder(self.tokenizer, self.encoder_config)
        saved = self.start.skipped.get(worker, {})  # the encoder's counts are restored (skipping never decodes)
        encoder.skipped.update({k: v for k, v in saved.items() if k not in READ_REASONS and k != EXTRA_SAMPLES})
        word_lists = MvplmWordLists(seed, stream, mvplm_vocabulary(u for s in self.sets for u in s.urls),
                                    self.config.mvplm_word_budget)  # fmt: skip
        # step 5a (MVP-LM word lists) just before encoding; raw.count = the sample's position in the stream
        encode = _guarded(encoder, lambda sample: word_lists(sample, raw.count))
        for batch in batches(raw, encode, self.config.micro_batch_size, self.config.batch_unit):
            inputs = collate(batch.samples, self.pad_token_id, self.image_token_id, config=self.encoder_config)
            yield LoaderBatch(inputs, worker, batch.consumed, {**ledger.lost, **encoder.skipped},
                              [s.key for s in batch.samples], len(batch.samples), ledger.read)  # fmt: skip


class ShardLoader:
    """Step 7 and the state: iterate for batches, ``state_dict()`` / ``load_state_dict()`` around checkpoints."""

    def __init__(
        self, sets: list[ShardSet], tokenizer, encoder_config: EncoderConfig, config: LoaderConfig,
        rank: int = 0, world_size: int = 1, pin_memory: bool = False,
    ) -> None:  # fmt: skip
        reader = f"this loader (EncoderConfig.format={encoder_config.format!r})"
        for shard_set in sets:  # a build in another format would only be skipped sample by sample
            require_format(shard_set, encoder_config.format, reader)
        format_token_ids(tokenizer, encoder_config.format)  # the format's tokens are single tokens, or one line
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
        try:
            for batch in self.dataloader():
                self.state.batches += 1
                self.state.consumed[batch.worker] = batch.consumed
                self.state.skipped[batch.worker] = batch.skipped
                self.state.read[batch.worker] = batch.read
                yield batch
        except ShardError as exc:  # raised in a worker: the DataLoader re-raises it with the worker's traceback
            raise ShardError(_worker_message(exc)) from None

    def skipped(self) -> dict[str, int]:
        """Samples lost or skipped by reason (reader and encoder), summed over this rank's workers."""
        total: Counter[str] = Counter()
        for counts in self.state.skipped.values():
            total.update(counts)
        return {k: v for k, v in sorted(total.items()) if v}

    def data_stats(self) -> dict[str, Any]:
        """``{"read": raw samples delivered, "skipped": {reason: n}}`` of this rank's consumed batches."""
        return {"read": sum(self.state.read.values()), "skipped": self.skipped()}

    def state_dict(self) -> dict[str, Any]:
        return self.state.to_dict()

    def load_state_dict(self, body: dict[str, Any], exact: bool = True) -> None:
        """``exact=False``: the trainer accepted an inexact resume (other shards, seed, batch): reseed the streams."""
        state = LoaderState.from_dict(body)
        if not exact or (state.world_size, state.num_workers) != (self.world_size, self.config.num_workers):
            log.warning(
                "loader state was saved with world_size=%d, num_workers=%d; now %d, %d: resuming statistically "
                "(fresh seeded streams), not with the exact next batches",
                state.world_size, state.num_workers, self.world_size, self.config.num_workers,
            )  # fmt: skip
            state = LoaderState(self.config.seed * 1_000_003 + state.batches, self.world_size, self.config.num_workers,
                                batches=0)  # fmt: skip
        self.state = state


class RottenDataError(ShardError):
    """Too much of the data is unreadable or undecodable for the run to mean anything."""


def skipped_fraction(read: int, skipped: dict[str, int]) -> tuple[int, int]:
    """(samples lost or skipped, samples the data should have given) from :meth:`ShardLoader.data_stats`."""
    lost = sum(n for reason, n in skipped.items() if reason != EXTRA_SAMPLES)
    lost_before_reading = sum(n for reason, n in skipped.items() if reason in READ_REASONS)
    return lost, read + lost_before_reading


def rotten_data(read: int, skipped: dict[str, int], max_fraction: float, final: bool = False) -> str | None:
    """Why the run must stop (too large a fraction of the data is skipped), or None.

    The fraction is judged once a single skip could stay under it (``seen >= 1 / max_fraction`` samples), so
    one bad sample early on does not stop a run; ``final=True`` judges whatever was seen. ``max_fraction >= 1``
    never stops.
    """
    lost, seen = skipped_fraction(read, skipped)
    if max_fraction >= 1 or not lost or not seen:
        return None
    if lost / seen <= max_fraction or (not final and seen < 1 / max(max_fraction, 1e-9)):
        return None
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items(), key=lambda kv: -kv[1]) if n)
    return (f"{lost} of {seen} samples ({lost / seen:.1%}) were skipped, more than max_skip_fraction "
            f"{max_fraction:g}: {reasons}")  # fmt: skip


#: samples skipped in a row after which a stream gives up: nothing it reads can be trained on (every sample of
#: another format, over-long, ...); without a bound the endless stream would search forever for one batch
SKIPS_IN_A_ROW = 1000


def _guarded(encoder: Encoder, prepare: Callable[[dict], dict] = lambda raw: raw, give_up_after: int = SKIPS_IN_A_ROW):
    """``encoder(prepare(raw))``, with a sample it cannot even parse (no or broken JSON) counted as
    ``malformed_sample``; more than ``give_up_after`` skipped samples in a row raise :class:`ShardError`."""
    in_a_row = 0

    def encode(raw: dict):
        nonlocal in_a_row
        try:
            sample = encoder(prepare(raw))
        except Exception as exc:
            if not encoder.skipped["malformed_sample"]:
                log.warning("skipping %s from %s: %s: %s (further malformed samples are only counted)",
                            raw.get("__key__"), raw.get("__url__"), type(exc).__name__, exc)  # fmt: skip
            encoder.skipped["malformed_sample"] += 1
            sample = None
        in_a_row = 0 if sample is not None else in_a_row + 1
        if in_a_row > give_up_after:
            reasons = ", ".join(f"{reason} {n}" for reason, n in encoder.skipped.most_common() if n)
            raise ShardError(f"{in_a_row} samples in a row were skipped, none can be trained on (so far: {reasons}); "
                             f"the last: {raw.get('__key__')} from {raw.get('__url__')}")  # fmt: skip
        return sample

    return encode


def _worker_message(exc: Exception) -> str:
    """The original message of an error a DataLoader worker raised (its last traceback line)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    last = lines[-1] if lines else str(exc)
    return last.split("Error: ", 1)[1] if "ShardError: " in last else last


def _copy_state(state: LoaderState) -> LoaderState:
    return LoaderState.from_dict(state.to_dict())


def _passthrough(batch: LoaderBatch) -> LoaderBatch:
    return batch


def _pad_id(tokenizer) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return pad if pad is not None else tokenizer.convert_tokens_to_ids("<|endoftext|>")


def pin(inputs: CompactBatch) -> CompactBatch:
    """Page-locked copies so ``to(device, non_blocking=True)`` overlaps the copy with compute."""
    return inputs.pin_memory()
