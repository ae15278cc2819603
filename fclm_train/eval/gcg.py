"""Grounded conversation generation (GCG) metrics on GranD-f: AP50, METEOR, CIDEr, mIoU, recall.

Reproduces GLaMM (``mbzuai-oryx/groundingLMM`` @e74865f: ``eval/gcg/infer.py`` for the output
cleaning, ``eval/gcg/evaluate.py`` for the metrics):

* output text ``... <p> phrase </p> [SEG] ...`` -> caption without tags / ``[SEG]`` and the
  ``<p>`` phrases; phrase i goes with predicted mask i;
* AP50: pycocotools ``COCOeval(..., "segm")``, category 1, every prediction scored 1.0, default
  params, ``stats[1]``. With tied scores the ranking is submission order, images in sorted-id
  order, so the image ids you pass matter (GLaMM's are image-file stems);
* METEOR / CIDEr over the whole split in one call (:mod:`fclm_train.eval.captions`);
* mIoU: per image, greedily pair the highest-IoU (pred, GT) pair, remove its row and column, and
  repeat while the best IoU > 0; image score = mean over pairs, or 0; mIoU = mean over images;
* recall: per image, greedy on IoU over (GT, pred); at the current best pair **stop** (not skip)
  when IoU < 0.5 or text similarity < 0.5, else count a TP and zero its row and column;
  recall = sum TP / sum #GT phrases over the split.

IoUs come from ``pycocotools.mask.iou`` on the RLEs (exact counts, no decoding); where GLaMM would
produce NaN (a pair of empty masks) the IoU here is 0, and GranD-f GT masks are never empty. GLaMM's recall text similarity is the cosine of ``bert-base-uncased`` mean-pooled
states; pass ``text_similarity`` built from :class:`~fclm_train.eval.embedders.BertMeanPoolEmbedder`
for that, otherwise all-MiniLM-L6-v2 cosines stand in (not bit-exact: recall may differ slightly).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fclm_train.eval.captions import JavaNotFoundError, caption_scores
from fclm_train.eval.embedders import TextSimilarity, embedding_similarity, load_minilm
from fclm_train.eval.masks import MaskLike, as_rle

RECALL_IOU = 0.5
RECALL_TEXT_SIM = 0.5
_TAG = re.compile(r"<.*?>")
_PHRASE = re.compile(r"<p>(.*?)<\/p>")


def parse_gcg_output(text: str) -> tuple[str, list[str]]:
    """GLaMM's cleaning of a generated answer: ``(caption, phrases)``.

    Newlines are deleted (not replaced by spaces) and double spaces halved once, as in
    ``infer.py``; the caption then loses every ``<...>`` tag and ``[SEG]``, whitespace is collapsed
    and single quotes at both ends are stripped. Pass the assistant's answer only (GLaMM first cuts
    at ``"ASSISTANT: "``).
    """
    text = text.replace("\n", "").replace("  ", " ")
    phrases = [phrase.strip() for phrase in _PHRASE.findall(text)]
    caption = _TAG.sub("", text).replace("[SEG]", "")
    caption = " ".join(caption.split()).strip("'").strip()
    return caption, phrases


def iou_matrix(masks_a: Sequence[MaskLike], masks_b: Sequence[MaskLike]) -> np.ndarray:
    """(len(a), len(b)) mask IoUs (GLaMM's ``compute_iou``), computed on RLEs by pycocotools.

    A pair of empty masks gets 0 where GLaMM's numpy division gives NaN.
    """
    if not masks_a or not masks_b:
        return np.zeros((len(masks_a), len(masks_b)))
    rles_a = [_coco_rle(as_rle(m)) for m in masks_a]
    rles_b = [_coco_rle(as_rle(m)) for m in masks_b]
    ious = mask_utils.iou(rles_a, rles_b, [0] * len(rles_b))  # iscrowd 0: plain IoU
    return np.asarray(ious, dtype=np.float64).reshape(len(rles_a), len(rles_b))


def greedy_miou(ious: np.ndarray) -> float:
    """One image's mIoU from its (pred, GT) IoU matrix: greedy one-to-one pairs, mean over pairs."""
    ious = np.array(ious, dtype=np.float64)
    paired = []
    while ious.size > 0 and ious.max() > 0:
        row, col = np.unravel_index(np.argmax(ious), ious.shape)
        paired.append(ious[row, col])
        ious = np.delete(np.delete(ious, row, axis=0), col, axis=1)
    return float(np.mean(paired)) if paired else 0.0


def greedy_recall_matches(
    ious: np.ndarray, text_sims: np.ndarray, iou_threshold: float = RECALL_IOU, sim_threshold: float = RECALL_TEXT_SIM
) -> int:
    """GLaMM's ``find_best_matches``: the number of TPs in one image.

    ``ious`` is (#GT masks, #pred masks) and ``text_sims`` (#GT phrases, #pred phrases). Matching
    stops at the first best-IoU pair that fails a gate. When that pair has no phrase (more masks
    than phrases) GLaMM's lookup raises and the image is swallowed with 0 TPs; so is it here.
    """
    ious, text_sims = np.array(ious, dtype=np.float64), np.array(text_sims, dtype=np.float64)
    matches = 0
    while ious.size > 0:
        row, col = np.unravel_index(np.argmax(ious), ious.shape)
        if ious[row, col] < iou_threshold:
            break
        if row >= text_sims.shape[0] or col >= text_sims.shape[1]:
            return 0
        if text_sims[row, col] < sim_threshold:
            break
        matches += 1
        ious[row, :], ious[:, col] = 0, 0
        text_sims[row, :], text_sims[:, col] = 0, 0
    return matches


@dataclass
class GcgImage:
    """One image's prediction and GT; phrase i goes with mask i on each side."""

    image_id: Hashable
    size: tuple[int, int]  #: (H, W)
    pred_caption: str
    pred_phrases: list[str]
    pred_masks: list[dict]  #: compressed RLEs
    gt_caption: str
    gt_phrases: list[str]
    gt_masks: list[dict]  #: compressed RLEs


def gcg_ap50(images: Sequence[GcgImage]) -> float:
    """COCO mask AP at IoU 0.5 (``stats[1]``), one category, all scores 1.0; 0 with no prediction."""
    gt = {
        "images": [{"id": im.image_id, "height": im.size[0], "width": im.size[1]} for im in images],
        "annotations": [],
        "categories": [{"id": 1, "name": "object"}],
    }
    for im in images:
        for rle in im.gt_masks:
            coco_rle = _coco_rle(rle)
            area, bbox = float(mask_utils.area(coco_rle)), mask_utils.toBbox(coco_rle).tolist()
            ann = {"image_id": im.image_id, "category_id": 1, "segmentation": rle, "area": area, "bbox": bbox}
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, **ann, "iscrowd": 0})
    detections = [
        {"image_id": im.image_id, "category_id": 1, "segmentation": rle, "score": 1.0}
        for im in images
        for rle in im.pred_masks
    ]
    if not detections:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the table
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(detections), "segm")
        coco_eval.params.catIds = [1]
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return float(coco_eval.stats[1])


def _coco_rle(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


class GcgEvaluator:
    """Accumulates GranD-f GCG images; :meth:`compute` scores the whole split at once."""

    def __init__(self, text_similarity: TextSimilarity | None = None) -> None:
        self.text_similarity = text_similarity
        self.images: list[GcgImage] = []
        self._ids: set = set()

    def update(
        self,
        image_id: Hashable,
        pred_caption: str,
        pred_phrases: Sequence[str],
        pred_masks: Sequence[MaskLike],
        gt_caption: str,
        gt_phrases: Sequence[str],
        gt_masks: Sequence[MaskLike],
    ) -> None:
        """Adds one image. Masks are (H, W) arrays or RLEs at the original resolution.

        Use :func:`parse_gcg_output` on the raw answer to get ``pred_caption`` / ``pred_phrases``.
        ``image_id`` should be GLaMM's (the image file stem): AP50 ranks tied scores by sorted id.
        """
        if image_id in self._ids:
            raise ValueError(f"image {image_id!r} added twice")
        pred_rles, gt_rles = [as_rle(m) for m in pred_masks], [as_rle(m) for m in gt_masks]
        sizes = {tuple(rle["size"]) for rle in pred_rles + gt_rles}
        if len(sizes) > 1:
            raise ValueError(f"image {image_id!r}: masks of different sizes {sorted(sizes)}")
        if not gt_rles:
            raise ValueError(f"image {image_id!r} has no GT mask")
        self._ids.add(image_id)
        image = GcgImage(image_id=image_id, size=sizes.pop(), pred_caption=pred_caption,
                         pred_phrases=list(pred_phrases), pred_masks=pred_rles,
                         gt_caption=gt_caption, gt_phrases=list(gt_phrases), gt_masks=gt_rles)  # fmt: skip
        self.images.append(image)

    def compute(self, captions: bool = True, recall: bool = True) -> dict[str, float | int | str | None]:
        """``ap50``, ``miou``, ``recall``, ``meteor``, ``cider`` as fractions, plus counts.

        A metric that was not run is None. Without Java, METEOR and CIDEr are None and the
        ``skipped`` note says why.

        Args:
            captions: run METEOR / CIDEr (Java).
            recall: run mask recall (needs the text similarity; MiniLM is loaded if none was given).
        """
        if not self.images:
            raise ValueError("GcgEvaluator.compute() before any update()")
        result: dict[str, float | int | str | None] = {
            "ap50": gcg_ap50(self.images),
            "miou": float(np.mean([greedy_miou(iou_matrix(im.pred_masks, im.gt_masks)) for im in self.images])),
            "recall": self._recall() if recall else None,
            "meteor": None,
            "cider": None,
            "n_images": len(self.images),
            "n_gt_phrases": sum(len(im.gt_phrases) for im in self.images),
        }
        if captions:
            try:
                result.update(self._caption_scores())
            except JavaNotFoundError as exc:
                result["skipped"] = f"meteor, cider: {exc}"
        return result

    def _recall(self) -> float:
        if self.text_similarity is None:
            self.text_similarity = embedding_similarity(load_minilm())
        true_positives, gt_phrases = 0, 0
        for image in self.images:
            gt_phrases += len(image.gt_phrases)
            text_sims = self.text_similarity(image.gt_phrases, image.pred_phrases)
            true_positives += greedy_recall_matches(iou_matrix(image.gt_masks, image.pred_masks), text_sims)
        return true_positives / gt_phrases if gt_phrases else 0.0

    def _caption_scores(self) -> dict[str, float]:
        references = {im.image_id: [im.gt_caption] for im in self.images}
        candidates = {im.image_id: im.pred_caption for im in self.images}
        return caption_scores(references, candidates)
