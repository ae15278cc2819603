"""The loader's generator stages (webdataset style: ``stage(iterator, ...) -> iterator``), in pipeline order.

Raw stages move tar bytes only; nothing is decoded before :func:`batches` calls the encoder, so fast-forwarding
after a resume (:func:`skip`) costs reading, never decoding. Every random choice comes from an explicit,
seeded ``random.Random``: a stream's output is a pure function of (seed, stream, number of streams).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .encode import EncodedSample
from .shards import ShardError, ShardReadError, ShardSet, StreamItem, iter_shard, stream_items

log = logging.getLogger(__name__)
Raw = dict  #: ``{"__key__", "__url__", "json": bytes, "jpg" | "png": bytes}``


#: samples lost before the encoder sees them, by reason (the encoder's own reasons are ``Encoder.skipped``)
READ_REASONS = {
    "shard_read_error": "a shard could not be opened or read (a 404, denied credentials, a failing pipe: command)",
    "truncated_shard": "a shard's tar ends mid-stream: the samples after the last complete one are lost",
    "missing_samples": "a shard read cleanly but holds fewer samples than its manifest lists",
}
#: not a loss, but a disagreement with the manifest worth counting (the extra samples are trained on)
EXTRA_SAMPLES = "extra_samples"


class ReadLedger:
    """One stream's reading record: raw samples read and samples lost, by reason (:data:`READ_REASONS`).

    Each shard item's yield is checked against its manifest / header-scan count, so a shard that fails
    part-way counts every sample it should have given. A resume re-reads the same shards while fast-forwarding,
    so the ledger rebuilds itself; it is never restored from a checkpoint.
    """

    def __init__(self) -> None:
        self.read = 0
        self.lost: Counter[str] = Counter()
        self._warned: set[str] = set()

    def shard_done(self, item: StreamItem, got: int, error: ShardReadError | None) -> None:
        """Check one finished item's yield (``got`` samples, already counted in ``read``) against its count."""
        expected = item.expected
        short = max(0, expected - got) if expected is not None else 0
        if error is not None:
            self.lost[error.reason] += short
            self._warn(error.reason, f"{error}; {short} sample(s) of this part of the shard lost")
        elif short:
            self.lost["missing_samples"] += short
            self._warn("missing_samples", f"{item.url}: {got} samples read, its manifest lists {expected}")
        elif expected is not None and got > expected:
            self.lost[EXTRA_SAMPLES] += got - expected
            self._warn(EXTRA_SAMPLES, f"{item.url}: {got} samples read, its manifest lists only {expected}")

    def _warn(self, reason: str, message: str) -> None:
        """Say it once per reason per stream; later ones are only counted."""
        if reason not in self._warned:
            self._warned.add(reason)
            log.warning("%s (further %s losses are only counted)", message, reason)


def read_items(
    items: Iterable[StreamItem], ledger: ReadLedger | None = None, give_up_after: int = 100
) -> Iterator[Raw]:  # fmt: skip
    """1. Tar members grouped into samples (webdataset's reader); keeps every ``parts``-th from ``part``.

    With a ``ledger``, a shard that fails part-way is counted there and reading goes on with the next shard;
    without one the :class:`ShardReadError` propagates. More than ``give_up_after`` failed shards in a row
    (every shard the stream reads is unreadable) raise :class:`ShardError`.
    """
    failures = 0  # consecutive items that failed without a sample: an endless stream must not spin forever
    for item in items:
        got, error = 0, None
        try:
            for index, sample in enumerate(iter_shard(item.url)):
                if index % item.parts == item.part:
                    got += 1
                    if ledger is not None:
                        ledger.read += 1
                    yield sample
        except ShardReadError as exc:
            if ledger is None:
                raise
            error = exc
        if ledger is not None:
            ledger.shard_done(item, got, error)
        failures = failures + 1 if error is not None and not got else 0
        if failures > give_up_after:
            raise ShardError(f"{failures} shards in a row gave no sample, the last: {error}")


def set_stream(
    shard_set: ShardSet, stream: int, n_streams: int, seed: int, set_index: int, ledger: ReadLedger | None = None
) -> Iterator[Raw]:  # fmt: skip
    """Endless raw samples of one set for one stream: its shards of epoch 0, then of epoch 1, ..."""
    items = stream_items(shard_set, stream, n_streams, seed, set_index)
    return read_items(items, ledger, give_up_after=len(shard_set.urls))


def mix(streams: list[Iterator[Raw]], weights: list[float], rng: random.Random) -> Iterator[Raw]:
    """2. Weighted random choice of the set each next sample comes from (recipe weights)."""
    choices = range(len(streams))
    while True:
        yield next(streams[rng.choices(choices, weights)[0]])


def shuffle(samples: Iterator[Raw], size: int, rng: random.Random, initial: int = 100) -> Iterator[Raw]:
    """3. A shuffle buffer of ``size`` raw samples (after shard-order shuffling); ``size <= 1`` passes through.

    As webdataset's ``shuffle(bufsize, initial)``: output starts once ``initial`` samples are buffered and the
    buffer grows by one extra sample per output until it holds ``size`` (a short time to the first batch).
    """
    buffer: list[Raw] = []
    size = max(size, 1)
    initial = min(initial, size)
    for sample in samples:
        buffer.append(sample)
        if len(buffer) < size:
            buffer.append(next(samples))
        if len(buffer) >= initial:
            k = rng.randrange(len(buffer))
            buffer[k], buffer[-1] = buffer[-1], buffer[k]
            yield buffer.pop()


class Counted:
    """An iterator that counts what it has handed out: the loader's resume position."""

    def __init__(self, source: Iterator[Raw]) -> None:
        self.source, self.count = source, 0

    def __iter__(self) -> Counted:
        return self

    def __next__(self) -> Raw:
        item = next(self.source)
        self.count += 1
        return item


def skip(samples: Counted, n: int) -> Counted:
    """4. Fast-forward past the ``n`` raw samples that earlier batches consumed (no decoding)."""
    for _ in range(n):
        next(samples)
    return samples


@dataclass
class RawBatch:
    """5. What a worker yields: encoded samples and the raw position right after them."""

    samples: list[EncodedSample]
    consumed: int  #: raw samples this stream has used up (resume skips exactly these)


def batches(
    raw: Counted, encode: Callable[[Raw], EncodedSample | None], size: int, unit: str
) -> Iterator[RawBatch]:  # fmt: skip
    """5. Encode and group: ``size`` samples per batch (``unit="sample"``, a paired sample counts once) or
    ``size`` rows (``unit="row"``; a pair is never split: it opens the next batch instead).

    A sample the encoder skips (too long, undecodable) is consumed and replaced by the next one.
    """
    pending: EncodedSample | None = None
    while True:
        batch, rows = ([pending], len(pending.rows)) if pending else ([], 0)
        pending = None
        while (len(batch) if unit == "sample" else rows) < size:
            sample = encode(next(raw))
            if sample is None:
                continue
            if unit == "row" and rows and rows + len(sample.rows) > size:
                pending = sample
                break
            batch.append(sample)
            rows += len(sample.rows)
        yield RawBatch(batch, raw.count - (1 if pending else 0))


# --------------------------------------------------------------------------------------------- MVP-LM word lists
def mvplm_vocabulary(urls: Iterable[str]) -> list[str]:
    """The category names of the MVP-LM builds the shards come from (``manifest.json`` ``mvplm_vocabulary``
    beside each shard), sorted; ``[]`` when no manifest names one (lists are then shuffled, never padded)."""
    import json
    from pathlib import Path

    names: set[str] = set()
    for directory in sorted({str(Path(u).parent) for u in urls}):
        manifest = Path(directory) / "manifest.json"
        if manifest.is_file():
            names.update(json.loads(manifest.read_text(encoding="utf-8")).get("mvplm_vocabulary", []))
    return sorted(names)


class MvplmWordLists:
    """5a. MVP-LM word lists, redrawn every time a sample is read (the paper's §3 "Randomness in Training Pairs"):
    the list is shuffled and padded with absent categories from ``vocabulary`` up to ``budget`` words; the
    turn text, the names' character spans and the targets' class indexes are rewritten to match.

    Applied to raw samples after :func:`skip`, inside the encode step, so fast-forwarding still decodes nothing;
    its RNG is seeded from (seed, stream, the sample's raw position, key), so a resumed stream redraws exactly the
    lists an uninterrupted one drew, and a sample read again (next epoch, repeats) gets a fresh list.
    Samples of other formats and sentence-based turns pass through unchanged.
    """

    def __init__(self, seed: int, stream: int, vocabulary: list[str], budget: int) -> None:
        """``budget``: words per list after padding (``data.mvplm_word_budget``, whose default is the config's)."""
        self.seed, self.stream, self.vocabulary, self.budget = seed, stream, list(vocabulary), budget

    def __call__(self, raw: Raw, position: int) -> Raw:
        import json

        if b'"format":"mvplm"' not in raw["json"]:
            return raw
        sample = json.loads(raw["json"])
        turns = [(n, t) for n, t in enumerate(sample["format_fields"]["turns"]) if t["mode"] == "word"]
        if not turns:
            return raw
        rng = random.Random(f"fclm-mvplm/{self.seed}/{self.stream}/{position}/{sample['key']}")
        for n, turn in turns:
            self._redraw(sample, n, turn, rng)
        return {**raw, "json": json.dumps(sample, ensure_ascii=False, separators=(",", ":")).encode("utf-8")}

    def _redraw(self, sample: dict, n: int, turn: dict, rng: random.Random) -> None:
        from fclm_data.formats.mvplm import word_instruction

        positives = turn["words"]
        absent = [w for w in self.vocabulary if w not in set(positives)]
        negatives = rng.sample(absent, min(len(absent), max(0, self.budget - len(positives))))
        words = positives + negatives
        rng.shuffle(words)
        user = sample["conversations"][2 * n]
        user["content"], turn["word_spans"] = word_instruction(words, first=n == 0)
        turn["classes"] = [words.index(positives[c]) for c in turn["classes"]]
        turn["words"], turn["negatives"] = words, len(negatives)
