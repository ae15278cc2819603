"""fclm_train.eval: the benchmark metrics, with the reference implementations' semantics.

One module per task family; each docstring names the reference code it reproduces.

* :mod:`.segmentation`: cIoU / gIoU (LISA) for RES, ReasonSeg, MUSE, DL-RES
* :mod:`.rec`: REC Acc@0.5, from mask-derived boxes (UniPixel) or predicted boxes
* :mod:`.roc`: SS / sIoU (Osprey) for LVIS / PACO referring object classification
* :mod:`.gcg`: GranD-f GCG AP50, mIoU, recall, and METEOR / CIDEr via :mod:`.captions` (GLaMM)
* :mod:`.dlc_bench`: DLC-Bench Pos / Neg / Avg with a pluggable :mod:`.judge` (DAM)
* :mod:`.embedders`: MiniLM / BERT sentence embedders behind an ``Embedder`` protocol
* :mod:`.report`: results -> JSON report and printed table

Metrics take numpy masks or COCO RLEs and return fractions; torch is only imported by the model
loaders in :mod:`.embedders`.
"""

from fclm_train.eval.captions import JavaNotFoundError, caption_scores, java_available
from fclm_train.eval.dlc_bench import DlcBenchResult, RegionScore, load_dlc_bench, parse_choice, score_dlc_bench
from fclm_train.eval.embedders import (
    BertMeanPoolEmbedder,
    Embedder,
    ModelNotFoundError,
    TextSimilarity,
    embedding_similarity,
    find_minilm,
    load_minilm,
)
from fclm_train.eval.gcg import GcgEvaluator, gcg_ap50, greedy_miou, greedy_recall_matches, parse_gcg_output
from fclm_train.eval.judge import Judge, OpenAIJudge, ReplayJudge
from fclm_train.eval.rec import RecAccuracyMeter, box_iou, mask_to_box
from fclm_train.eval.report import format_table, make_report, write_report
from fclm_train.eval.roc import RocMeter, normalize_roc_category, normalize_roc_prediction, semantic_iou
from fclm_train.eval.segmentation import SegmentationMeter, expression_iou, mask_counts

#: ``fclm-eval --seg-mode`` values (here, not in ``run``, so the CLI checks them before torch loads); the ``--task``
#: values are the modules of :mod:`fclm_train.eval.tasks`
SEG_MODES = ("generate", "forced")

__all__ = [
    "BertMeanPoolEmbedder",
    "DlcBenchResult",
    "Embedder",
    "GcgEvaluator",
    "JavaNotFoundError",
    "Judge",
    "ModelNotFoundError",
    "OpenAIJudge",
    "RecAccuracyMeter",
    "RegionScore",
    "ReplayJudge",
    "RocMeter",
    "SegmentationMeter",
    "TextSimilarity",
    "box_iou",
    "caption_scores",
    "embedding_similarity",
    "expression_iou",
    "find_minilm",
    "format_table",
    "gcg_ap50",
    "greedy_miou",
    "greedy_recall_matches",
    "java_available",
    "load_dlc_bench",
    "load_minilm",
    "make_report",
    "mask_counts",
    "mask_to_box",
    "normalize_roc_category",
    "normalize_roc_prediction",
    "parse_choice",
    "parse_gcg_output",
    "score_dlc_bench",
    "semantic_iou",
    "write_report",
]
