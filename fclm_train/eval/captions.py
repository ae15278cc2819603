"""Caption metrics for GCG: METEOR-1.5 and CIDEr(-D) through pycocoevalcap, as GLaMM reports them.

GLaMM (``mbzuai-oryx/groundingLMM`` @e74865f, ``eval/gcg/evaluate.py``) runs
``COCOEvalCap.evaluate()``; that also runs SPICE, which downloads Stanford CoreNLP models. We run
the same pieces it chains, minus SPICE: ``PTBTokenizer`` over references and candidates
separately, then ``Meteor().compute_score`` and ``Cider().compute_score`` on the tokenized dicts.

* METEOR is the jar's system-level score (the last line it prints), not a mean of segment scores.
* CIDEr's IDF comes from the references being scored, so the whole split goes in one call; a
  per-image CIDEr is always 0 (log of one document), and subset scores are not comparable.

PTBTokenizer and METEOR need Java; without it :func:`caption_scores` raises
:class:`JavaNotFoundError`, which callers can catch to skip these two metrics.
"""

from __future__ import annotations

import shutil
from collections.abc import Hashable, Mapping, Sequence

CAPTION_METRICS = ("meteor", "cider")


class JavaNotFoundError(RuntimeError):
    """``java`` is not on PATH: PTBTokenizer and METEOR-1.5 cannot run."""


def java_available() -> bool:
    return shutil.which("java") is not None


def caption_scores(
    references: Mapping[Hashable, Sequence[str]],
    candidates: Mapping[Hashable, str],
    metrics: Sequence[str] = CAPTION_METRICS,
) -> dict[str, float]:
    """Corpus METEOR / CIDEr of one candidate per image against its references.

    Args:
        references: image id -> GT captions (GranD-f has one per image).
        candidates: image id -> predicted caption (GLaMM-cleaned), same ids as ``references``.
        metrics: any of ``"meteor"``, ``"cider"``.

    Returns:
        ``{metric: score}`` as fractions (x100 for the usual tables).
    """
    unknown = set(metrics) - set(CAPTION_METRICS)
    if unknown:
        raise ValueError(f"unknown caption metrics {sorted(unknown)}; choose from {CAPTION_METRICS}")
    if set(references) != set(candidates):
        raise ValueError("references and candidates must cover the same image ids")
    if not references:
        raise ValueError("no captions to score")
    if not java_available():
        raise JavaNotFoundError("METEOR/CIDEr need Java (PTBTokenizer, meteor-1.5.jar): install a JRE >= 8 on PATH")
    gts, res = _tokenize(references, candidates)
    scores = {}
    if "meteor" in metrics:
        scores["meteor"] = _meteor(gts, res)
    if "cider" in metrics:
        from pycocoevalcap.cider.cider import Cider

        scores["cider"] = float(Cider().compute_score(gts, res)[0])
    return scores


def _tokenize(references, candidates) -> tuple[dict, dict]:
    """PTB-tokenize (lower-cased, punctuation dropped) as COCOEvalCap does: GT and results apart."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({key: [{"caption": c} for c in captions] for key, captions in references.items()})
    res = tokenizer.tokenize({key: [{"caption": candidates[key]}] for key in references})
    return gts, res


def _meteor(gts: dict, res: dict) -> float:
    """System-level METEOR-1.5; the jar process is shut down even if scoring fails."""
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor()
    try:
        return float(meteor.compute_score(gts, res)[0])
    finally:
        if meteor.lock.locked():  # compute_score raised mid-protocol; __del__ would deadlock
            meteor.lock.release()
        meteor.meteor_p.stdin.close()
        meteor.meteor_p.kill()
        meteor.meteor_p.wait()
