"""The eval task registry, the gRES meter, box answers for REC and REG's expression recovery (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import build, read_samples
from typer.testing import CliRunner

from fclm_train.eval.cli import app
from fclm_train.eval.gres import GresMeter
from fclm_train.eval.rec import BOX_FRAMES, box_to_original, parse_box_answer
from fclm_train.eval.run import EvalSample
from fclm_train.eval.tasks import TaskSpec, get_task, task_names
from fclm_train.eval.tasks.rec import RecTask
from fclm_train.eval.tasks.reg import expression_of, object_id
from fclm_train.infer.requests import LoadedImage

ALL_TASKS = ["dlc", "gcg", "gres", "reason", "rec", "reg", "res", "roc"]


def test_registry_lists_every_task_module_and_each_names_itself():
    assert task_names() == ALL_TASKS
    for name in ALL_TASKS:
        spec = get_task(name)
        assert isinstance(spec, TaskSpec) and spec.name == name and spec.description


def test_unknown_task_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown eval task 'nope'; registered: dlc, gcg"):
        get_task("nope")
    result = CliRunner().invoke(app, ["--checkpoint", "x", "--task", "nope", "--shards", "y"])
    assert result.exit_code == 2 and "nope" in result.output


def test_cli_offers_the_registry_choices():
    # the choices named by the one-line error are the registry's modules
    result = CliRunner().invoke(app, ["--checkpoint", "x", "--task", "vqa", "--shards", "y"])
    assert result.exit_code == 2 and f"--task 'vqa' is not one of {', '.join(ALL_TASKS)}" in result.output
    result = CliRunner().invoke(app, ["--checkpoint", "x", "--task", "rec", "--box-frame", "pixels", "--shards", "y"])
    assert result.exit_code == 2 and f"--box-frame 'pixels' is not one of {', '.join(BOX_FRAMES)}" in result.output


def _mask(shape, y0, y1, x0, x1):
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_gres_meter_follows_the_grefcoco_definitions():
    shape = (10, 10)
    meter = GresMeter()
    assert meter.update(None, None, shape) == 1.0  # no target, no mask: TP, IoU 1
    assert meter.update(_mask(shape, 0, 2, 0, 5), None, shape) == 0.0  # no target, 10 px predicted: FN
    gt = _mask(shape, 0, 4, 0, 5)  # 20 px
    assert meter.update(_mask(shape, 0, 2, 0, 5), gt, shape) == pytest.approx(0.5)  # I 10 / U 20
    assert meter.update(None, gt, shape) == 0.0  # target, no mask: FP
    result = meter.compute()
    # cIoU: I = 10; U = 10 (the FN's predicted area) + 20 + 20
    assert result["ciou"] == pytest.approx(10 / 50)
    assert result["giou"] == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert result["n_acc"] == 0.5 and result["t_acc"] == 0.5
    assert result["n"] == 4 and result["n_no_target"] == 2


def test_gres_meter_without_no_target_expressions_reports_no_n_acc():
    meter = GresMeter()
    meter.update(_mask((4, 4), 0, 2, 0, 2), _mask((4, 4), 0, 2, 0, 2), (4, 4))
    assert meter.compute()["n_acc"] is None and meter.compute()["t_acc"] == 1.0
    with pytest.raises(ValueError, match="differ"):
        meter.update(np.zeros((3, 3), bool), np.zeros((4, 4), bool), (4, 4))


@pytest.mark.parametrize(("text", "box"), [
    ("It is at [10, 20, 110, 220].", (10, 20, 110, 220)),
    ('```json\n[{"bbox_2d": [5.5, 6, 7, 8], "label": "cat"}]\n```', (5.5, 6, 7, 8)),
    ("<|box_start|>(1,2),(30,40)<|box_end|> and [0, 0, 1, 1]", (1, 2, 30, 40)),
    ("[SEG].", None),
    ("[1, 2, 3]", None),
])  # fmt: skip
def test_parse_box_answer(text, box):
    assert parse_box_answer(text) == box


def test_box_frames_map_to_original_pixels():
    assert set(BOX_FRAMES) == {"input", "original", "norm1000", "norm1"}
    assert box_to_original((10, 10, 20, 20), "original", (100, 200)) == (10, 10, 20, 20)
    assert box_to_original((10, 10, 20, 20), "input", (100, 200), (50, 100)) == (20, 20, 40, 40)
    assert box_to_original((500, 500, 1000, 1000), "norm1000", (100, 200)) == (100, 50, 200, 100)
    assert box_to_original((0.5, 0.5, 1, 1), "norm1", (100, 200)) == (100, 50, 200, 100)
    with pytest.raises(ValueError, match="input size"):
        box_to_original((0, 0, 1, 1), "input", (100, 200))


def _sample(entry: str, bbox: list[float], shape=(100, 200)) -> EvalSample:
    meta = {"key": f"{entry}-x", "regions": [{"bbox": bbox}], "seg_targets": [0]}
    return EvalSample(meta, LoadedImage(torch.zeros(3, *shape, dtype=torch.uint8), shape))


def test_rec_task_scores_a_box_answer_before_the_mask():
    task = RecTask(box_frame="input")
    view = {"seg_targets": [0]}
    hit_by_box = _sample("a", [20, 20, 40, 40])
    task.update(hit_by_box, view, "[10, 10, 20, 20]", [np.zeros((100, 200), bool)], (50, 100))
    mask = _mask((100, 200), 50, 60, 50, 60)  # mask box (50, 50, 59, 59): IoU with the GT 81/100
    task.update(_sample("a", [50, 50, 60, 60]), view, "[SEG].", [mask], (50, 100))
    task.update(_sample("a", [0, 0, 10, 10]), view, "nothing", [], (50, 100))
    result = task.results()["a"]
    assert result == {"acc": 2 / 3, "hits": 2, "n": 3, "from_box": 1, "from_mask": 1, "no_answer": 1}


def test_reg_recovers_every_expression_of_a_refcocog_val_build(data_root, tmp_path):
    from fclm_data.recipes import load_recipe

    build(load_recipe("eval_reg"), data_root, tmp_path)
    samples = [meta for meta, _, _ in read_samples(tmp_path).values()]
    assert samples
    import pickle

    refs = pickle.loads((data_root / "refer_seg/refcocog/refs(umd).p").read_bytes())
    truth = {str(s["sent_id"]): s["sent"] for r in refs for s in r["sentences"]}
    for meta in samples:
        sent_id = meta["key"].rsplit("-", 1)[1]
        assert expression_of(meta) == truth[sent_id].strip()
    assert len({object_id(m) for m in samples}) < len(samples)  # several expressions per object
