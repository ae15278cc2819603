"""Prompt templates: the FCLM supplement's Table 12 verbatim, plus the per-task templates.

Every table is a tuple of strings; a template id is ``"<table>:<n>"`` with n 1-based as numbered
in the paper. :func:`pick` chooses from a table with a hash of (build seed, sample key, table,
slot), so rebuilding with the same seed gives byte-identical conversations, and repeated samples
(different keys) get fresh draws.

Rendering notes (documented choices):

* Table 12 writes the image as ``<images>`` / Qwen's ``<|image_pad|>``; our schema uses one
  ``<image>`` placeholder at the start of the first user turn, and the trainer expands it.
* The DL-RES question is "<caption>. Please ...": captions already ending in ".", "!" or "?" are
  not given a second full stop (Fig. 6 of the supplement shows exactly that rendering).
"""

from __future__ import annotations

from fclm_data.schema import IMAGE_TOKEN, REGION_TOKEN, SEG_TOKEN
from fclm_data.seeding import stable_index

# --- Table 12: Detailed Localized Captioning (DLC), question prompts (1)-(30) -----------------------
DLC_QUESTIONS = (
    "Can you provide me with a detailed description of the region in the picture marked by <region>?",
    "I'm curious about the region represented by <region> in the picture. Could you describe it in detail?",
    "What can you tell me about the region indicated by <region> in the image?",
    "I'd like to know more about the area in the photo labeled <region>. Can you give me a detailed description?",
    "Could you describe the region shown as <region> in the picture in great detail?",
    "What details can you give me about the region outlined by <region> in the photo?",
    "Please provide me with a comprehensive description of the region marked with <region> in the image.",
    "Can you give me a detailed account of the region labeled as <region> in the picture?",
    "I'm interested in learning more about the region represented by <region> in the photo. Can you describe it in detail?",
    "What is the region outlined by <region> in the picture like? Could you give me a detailed description?",
    "Can you provide me with a detailed description of the region in the picture marked by <region>, please?",
    "I'm curious about the region represented by <region> in the picture. Could you describe it in detail, please?",
    "What can you tell me about the region indicated by <region> in the image, exactly?",
    "I'd like to know more about the area in the photo labeled <region>, please. Can you give me a detailed description?",
    "Could you describe the region shown as <region> in the picture in great detail, please?",
    "What details can you give me about the region outlined by <region> in the photo, please?",
    "Please provide me with a comprehensive description of the region marked with <region> in the image.",
    "Can you give me a detailed account of the region labeled as <region> in the picture?",
    "I'm interested in learning more about the region represented by <region> in the photo. Can you describe it in detail, please?",
    "What is the region outlined by <region> in the picture like, please? Could you give me a detailed description?",
    "Please describe the region <region> in the image in detail.",
    "Can you offer a thorough analysis of the region <region> in the image?",
    "Could you elaborate on the region highlighted by <region> in the picture provided?",
    "Please share more information about the zone emphasized with <region> in the photo.",
    "What insights can you give about the area denoted by <region> in the image presented?",
    "Can you share a comprehensive rundown of the region denoted by <region> in the presented image?",
    "I'd like to know more about the region highlighted by <region> in the picture provided.",
    "Work through the important details of the area <region> in the image.",
    "Illustrate the area represented by <region> through a descriptive explanation.",
    "Examine the region <region> closely and share its details.",
)  # fmt: skip

# --- Table 12: Detailed Localized Referring Expression Segmentation (DL-RES) ---------------------------
#: "<images>\n<Detailed Localized Caption>. Please ..." -- the caption part is rendered by dlres_query.
DLRES_QUESTIONS = (
    "<Detailed Localized Caption>. Please respond with segmentation mask.",
    "<Detailed Localized Caption>. Please output segmentation mask.",
)
DLRES_ANSWERS = (
    "It is [SEG].",
    "Sure, [SEG].",
    "Sure, it is [SEG].",
    "Sure, the segmentation result is [SEG].",
    "[SEG].",
)

# --- Referring expression segmentation (RefCOCO/+/g): LISA's short-question list and answers -------
#: FCLM trains RES "following LISA"; these are LISA's SHORT_QUESTION_LIST with {expression}.
RES_QUESTIONS = (
    "Can you segment the {expression} in this image?",
    "Please segment the {expression} in this image.",
    "What is {expression} in this image? Please respond with segmentation mask.",
    "What is {expression} in this image? Please output segmentation mask.",
)
#: LISA's ANSWER_LIST (identical to Table 12's DL-RES answers).
RES_ANSWERS = DLRES_ANSWERS

# ==== Grounded conversation generation (GCG family: GranD-f, OpenPSG, Flickr30K, RefCOCOg-GCG) ====
#: GLaMM's GCG_QUESTIONS verbatim (mbzuai-oryx/groundingLMM dataset/utils/utils.py, typos included).
#: FCLM's Fig. 9 shows the first one with "the image" written as "the <image>"; our schema puts
#: <image> at the start of the turn instead. The answer has no template: it is the caption with
#: every grounded phrase written ``<p> phrase </p> [SEG]`` (GLaMM's target format).
GCG_QUESTIONS = (
    "Could you please give me a detailed description of the image? Please respond with interleaved segmentation masks for the corresponding parts of the answer.",
    "Can you provide a thorough description of the this image? Please output with interleaved segmentation masks for the corresponding phrases.",
    "Please describe in detail the contents of the image. Please respond with interleaved segmentation masks for the corresponding parts of the answer.",
    "Could you give a comprehensive explanation of what can be found within this picture? Please output with interleaved segmentation masks for the corresponding phrases.",
    "Could you give me an elaborate explanation of this picture? Please respond with interleaved segmentation masks for the corresponding phrases.",
    "Could you provide me with a detailed analysis of this photo? Please output with interleaved segmentation masks for the corresponding parts of the answer.",
)  # fmt: skip
#: How a grounded phrase appears in a GCG answer (GLaMM's ``tag_caption``): one [SEG] per phrase.
GCG_PHRASE = "<p> {phrase} </p> " + SEG_TOKEN
# ==== end of GCG family ========================================================================

TABLES: dict[str, tuple[str, ...]] = {
    "dlc_question": DLC_QUESTIONS,
    "dlres_question": DLRES_QUESTIONS,
    "dlres_answer": DLRES_ANSWERS,
    "res_question": RES_QUESTIONS,
    "res_answer": RES_ANSWERS,
    "gcg_question": GCG_QUESTIONS,
}

_CAPTION_SLOT = "<Detailed Localized Caption>"


def pick(table: str, seed: int, key: str, slot: str = "") -> tuple[str, str]:
    """Choose a template of ``table`` for sample ``key``; returns (template id, text).

    ``slot`` separates several draws from one table within a sample (e.g. one per turn).
    """
    options = TABLES[table]
    i = stable_index(len(options), "template", seed, key, table, slot)
    return f"{table}:{i + 1}", options[i]


def template_text(template_id: str) -> str:
    """Inverse of :func:`pick`'s id: the template string for ``"<table>:<n>"``."""
    table, n = template_id.rsplit(":", 1)
    return TABLES[table][int(n) - 1]


def with_image(text: str) -> str:
    """Prefix the single image placeholder (first user turn only)."""
    return f"{IMAGE_TOKEN}\n{text}"


def dlres_query(template: str, caption: str) -> str:
    """Table 12 DL-RES question with the caption in place (no doubled full stop)."""
    caption = caption.strip()
    if caption.endswith((".", "!", "?")):
        return template.replace(_CAPTION_SLOT + ".", caption)
    return template.replace(_CAPTION_SLOT, caption)


def res_question(template: str, expression: str) -> str:
    return template.format(expression=expression.strip())


assert all(q.count(REGION_TOKEN) == 1 for q in DLC_QUESTIONS)
assert all(a.count(SEG_TOKEN) == 1 for a in DLRES_ANSWERS)
