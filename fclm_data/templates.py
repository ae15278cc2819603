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

# =====================================================================================
# --- grounding family: ReasonSeg, MUSE, Pix2Cap ----------------------------------------------------
# ReasonSeg phrases (is_sentence false) use RES_QUESTIONS (LISA's SHORT_QUESTION_LIST) and every
# single-mask answer uses RES_ANSWERS; Pix2Cap uses Table 12's DL-RES tables. Sources below.
# ===================================================================================================
#: LISA utils/utils.py LONG_QUESTION_LIST (PixelLM's is identical): reasoning sentences.
REASON_LONG_QUESTIONS = (
    "{sent} Please respond with segmentation mask.",
    "{sent} Please output segmentation mask.",
)
#: LISA utils/utils.py EXPLANATORY_QUESTION_LIST, appended to the instruction when the answer
#: carries ReasonSeg's explanatory text.
REASON_EXPLANATORY_QUESTIONS = (
    "Please output segmentation mask and explain why.",
    "Please output segmentation mask and explain the reason.",
    "Please output segmentation mask and give some explanation.",
)
#: PixelLM utils/utils.py MR_SINGLE_ANSWER_LIST: one clause per target, joined "a, b and c."
MUSE_SINGLE_ANSWERS = ("{class_name} is [SEG].",)
#: PixelLM utils/utils.py MR_MULTI_ANSWER_LIST: all targets in one clause; {seg} = "[SEG], [SEG] and [SEG]".
MUSE_MULTI_ANSWERS = (
    "{class_name} are {seg}, separately.",
    "{class_name} are {seg}.",
    "Sure, {class_name} are {seg}, separately.",
    "Sure, {class_name} are {seg}.",
    "the segmentation result of {class_name} are {seg}.",
    "the segmentation result of {class_name} are {seg}, separately.",
    "Sure, the segmentation result of {class_name} are {seg}.",
    "Sure, the segmentation result of {class_name} are {seg}, separately.",
)
# --- end of the grounding family -------------------------------------------------------------------
# ==================================================================================================
# --- Captioning family (VG, PACO-LVIS, Osprey-724K): region caption, ROC, detailed description ---
# Detailed descriptions use Table 12's DLC questions ("dlc_question"): they are Osprey's
# DETAILED_QUESTIONS (osprey/datasets/osprey_724k.py) with its typos fixed by the paper.
# Osprey conversations need no question templates (the questions are the data); listed-region
# rendering uses REGION_LIST_INTRO.
# ==================================================================================================

#: Short region captions (VG): Osprey's VGDATA QUESTIONS (osprey/datasets/vg.py), verbatim.
REGION_CAPTION_QUESTIONS = (
    "Give me a short description of <region>.",
    "Can you give me a short description of <region>?",
    "Can you provide me with a short description of the region in the picture marked by <region>?",
    "I'm curious about the region represented by <region> in the picture. Could you describe it in few words?",
    "What can you tell me about the region indicated by <region> in the image in few words?",
    "I'd like to know more about the area in the photo labeled <region>. Can you give me a concise description?",
    "Could you describe the region shown as <region> in the picture concisely?",
    "What can you give me about the region outlined by <region> in the photo?",
    "Please provide me with a brief description of the region marked with <region> in the image.",
    "Can you give me a brief introduction of the region labeled as <region> in the picture?",
    "I'm interested in knowing the region represented by <region> in the photo. Can you describe it in several words?",
    "What is the region outlined by <region> in the picture like? Could you give me a streamlined description?",
    "Can you provide me with a brief description of the region in the picture marked by <region>, please?",
    "I'm curious about the region represented by <region> in the picture. Could you describe it in few words, please?",
    "What can you tell me about the region indicated by <region> in the image?",
    "I'd like to know more about the area in the photo labeled <region>, please. Can you give me a simple description?",
    "Could you describe the region shown as <region> in the picture in several words?",
    "Please provide me with a simple description of the region marked with <region> in the image, please.",
    "I'm interested in learning more about the region represented by <region> in the photo. Can you describe it in few words, please?",
    "What is the region outlined by <region> in the picture like, please? Could you give me a simple and clear description?",
    "Please describe the region <region> in the image concisely.",
    "Can you offer a simple analysis of the region <region> in the image?",
    "Could tell me something about the region highlighted by <region> in the picture briefly?",
    "Can you share a simple rundown of the region denoted by <region> in the presented image?",
)  # fmt: skip
#: Osprey's VGDATA LIMIT, appended to every region-caption question.
REGION_CAPTION_SUFFIX = " Answer the question using a short phrase."
#: Osprey's ShortForm / PartLevel ``limit``, appended to every short-form question (LLaVA's wording).
SHORT_ANSWER_SUFFIX = " Answer the question using a single word or phrase."

#: Referring object classification. (1) is the FCLM supplement's Fig. 7 prompt (SPHINX-V's
#: "Please identify the labels of each marked region in the image." with the visual prompt inline);
#: (2) is Osprey's ROC evaluation prompt (osprey/eval/lvis_paco_eval.py); (3)-(5) are ours.
ROC_QUESTIONS = (
    "Please identify the labels of each marked <region> in the image.",
    "What is the category of <region>? Using only one word or phrase.",
    "What is the category of <region>? Answer the question using a single word or phrase.",
    "Name the object or object part marked by <region> in the image.",
    "Which category does the region <region> belong to?",
)

#: Osprey's conversation prefix ("Ther are {n} part regions in the picture: region1<mask><pos>, ...")
#: with its typo fixed; (1) for several regions, (2) for one. ``{regions}`` is "region 1 <region>, ...".
REGION_LIST_INTRO = (
    "There are {n} part regions in the picture: {regions}.",
    "There is 1 part region in the picture: {regions}.",
)

assert all(q.count(REGION_TOKEN) == 1 for q in REGION_CAPTION_QUESTIONS + ROC_QUESTIONS)
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
    "reason_long_question": REASON_LONG_QUESTIONS,
    "reason_explanatory_question": REASON_EXPLANATORY_QUESTIONS,
    "muse_single_answer": MUSE_SINGLE_ANSWERS,
    "muse_multi_answer": MUSE_MULTI_ANSWERS,
    "region_caption_question": REGION_CAPTION_QUESTIONS,
    "roc_question": ROC_QUESTIONS,
    "region_list_intro": REGION_LIST_INTRO,
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

# ==== Paired views for grounding sources (consistency learning; the ``pair`` source option) ==========
# A grounding sample asked for ``pair`` gets a region-in / text-out view beside its text-in / [SEG]-out view
# (fclm_data/sources/pairing.py). Detailed descriptions (Pix2Cap, Osprey) use Table 12 both ways
# ("dlc_question", "dlres_question" / "dlres_answer"); short texts use the tables below.
# ==================================================================================================
#: Referring expression generation (RefCOCO/+/g expressions, GCG phrases): region -> distinguishing text.
#: (1) REF-VLM's REG template (REF-VLM supplement, task-template table: "For the given image <image>, can you
#: provide a unique description of the area <mask>?"; our <image> opens the turn, the visual prompt is <region>);
#: (2)-(4) Griffon v2's REG example prompts (arXiv 2403.09333, "Example prompts chosen from the instruction set",
#: REG rows), "<image>" dropped the same way.
REG_QUESTIONS = (
    "For the given image, can you provide a unique description of the area <region>?",
    "Please generate a distinguishing description for the region <region> in the image.",
    "Describe the area <region> in a unique way, given the picture.",
    "Create a one-of-a-kind description for the region <region> found in the picture.",
)
#: The text-in / [SEG]-out view of a short name (PACO part and object names): LISA's short questions
#: (``res_question``) with LISA's answers (``res_answer``); no new table.
TABLES["reg_question"] = REG_QUESTIONS
assert all(q.count(REGION_TOKEN) == 1 for q in REG_QUESTIONS)
# ==== end of paired views ==========================================================================
# ==== formats and gRES (issue 15: REF-VLM / MVP-LM renderings, gRefCOCO) ===========================
# Kept apart from the FCLM tables above; the grounding-pair templates of another change live elsewhere.

#: gRES no-target answers. gRefCOCO ships no answer text; GSVA (Xia et al., CVPR 2024) answers a no-target
#: expression with a [REJ] token and LISA-style text around it. Ours: plain text, no [SEG] (the eval task
#: scores "no mask" as the no-target decision, gRefCOCO's N-acc).
GRES_NO_TARGET_ANSWERS = (
    "There is no such object in the image.",
    "Sorry, I cannot find it in the image.",
    "No object in the image matches the description.",
)

#: REF-VLM task prompts: the REF-VLM paper (github.com/MacavityT/REF-VLM), appendix D, Table "Task | Template", verbatim except that
#: the bracketed slots are our placeholders: ``{expression}`` (the referring expression), ``<region>`` (a visual
#: prompt input; REF-VLM writes ``<mask>`` for REG and ``<region>`` for IG), and ``<image>`` kept where it stands.
REFVLM_PROMPTS = {
    "caption": "<image>Please describe the image in detail.",
    "gcg_mask": "Describe the setting of the image <image>and offer masks for each visible object.",
    "gcg_box": "Please describe the image <image>and detect relevant bounding boxes.",
    "rec": "What are the coordinates of {expression}in the image<image>?",
    "res": "Provide a segmentation mask for {expression}in the picture <image>.",
    "reg": "For the given image <image>, can you provide a unique description of the area <region>?",
    "ig_mask": "Please generate a mask based on the region <region>in the image <image>.",
    "fovd": "Please detect bounding boxes in the image<image>.",
    "fovs": "Please segment objects in the image<image>.",
}

#: MVP-LM (the MVP-LM paper, §3 "CoT-inspired Dataset Unification"), verbatim: the task descriptions for
#: word-based and sentence-based perception, and the response with its ``<PER>`` summary token.
MVPLM_WORD_TASK = "Please identify all objects according to the given phrase list. This is all the candidate phrases."
MVPLM_SENTENCE_TASK = "Please identify the target according to the following instruction."
MVPLM_RESPONSE = "{caption}. The perception result is <PER>"
#: MVP-LM says the caption comes first ("thinking-then-perceiving"); where a source has no caption we write one
#: from the targets (ours; the paper's Tab. 7 ablation shows names-before-<PER> as a weaker variant).
MVPLM_CAPTION_FALLBACK = "The image shows {names}"

TABLES["gres_no_target_answer"] = GRES_NO_TARGET_ANSWERS
# ==== end of formats and gRES =====================================================================
