"""``fclm-infer``: one image, one question, JSON on stdout (masks as COCO RLEs), optional PNG overlay.

    fclm-infer segment  --checkpoint runs/stage2 --image photo.jpg --text "the dog on the left" --out overlay.png
    fclm-infer segment  --checkpoint runs/stage2 --image photo.jpg --text "A brown dog with ..." --query dlres
    fclm-infer describe --checkpoint runs/stage2 --image photo.jpg --box 40,30,200,180
    fclm-infer describe --checkpoint runs/stage2 --image photo.jpg --point 120,95
    fclm-infer classify --checkpoint runs/stage2 --image photo.jpg --mask region.png
    fclm-infer caption  --checkpoint runs/stage2 --image photo.jpg --out overlay.png

A region is exactly one of ``--box x0,y0,x1,y1`` (pixels, x1 / y1 exclusive), ``--point x,y`` or ``--mask PNG``
(non-zero pixels, the image's size); each becomes the visual prompt training used for that kind.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from fclm_data.commands.checks import existing_file, fail, one_of, output_file, positive

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False, add_completion=False)

Checkpoint = Annotated[Path, typer.Option(help="Checkpoint step directory, or a run directory (its latest).")]
ImagePath = Annotated[Path, typer.Option(help="The image (JPEG / PNG).")]
Out = Annotated[Optional[Path], typer.Option(help="Write a PNG overlay (regions and masks outlined, dialogue beside).")]
Device = Annotated[str, typer.Option(help="auto (cuda when available) | cpu | cuda | cuda:N.")]
MaxNewTokens = Annotated[int, typer.Option(help="Longest answer in tokens.")]
Temperature = Annotated[float, typer.Option(help="0 = greedy; > 0 samples (with --seed).")]
Seed = Annotated[int, typer.Option(help="Sampling seed.")]
Box = Annotated[Optional[str], typer.Option(help="Region as a box: x0,y0,x1,y1.")]
Point = Annotated[Optional[str], typer.Option(help="Region as a point: x,y.")]
MaskPng = Annotated[Optional[Path], typer.Option(help="Region as a mask PNG (non-zero = region).")]


@app.command()
def segment(
    checkpoint: Checkpoint, image: ImagePath,
    text: Annotated[str, typer.Option(help="What to segment.")],
    query: Annotated[str, typer.Option(help="res: a referring expression | dlres: a detailed caption | raw: the whole instruction.")] = "res",
    out: Out = None, device: Device = "auto", max_new_tokens: MaxNewTokens = 512, temperature: Temperature = 0.0,
    seed: Seed = 0,
) -> None:  # fmt: skip
    """Masks for a text (one per [SEG] the model emits)."""
    from fclm_train.infer.prompts import SEGMENT_QUERIES

    _check(checkpoint, image, out, device, max_new_tokens, temperature)
    one_of("--query", query, SEGMENT_QUERIES)
    if not text.strip():
        fail("--text is empty")
    predictor = _predictor(checkpoint, device, max_new_tokens, temperature, seed)
    prediction = predictor.predict(str(image), predictor.templates.segment(text, query))
    _emit(predictor, image, prediction, out, {"task": "segment"})


@app.command()
def describe(
    checkpoint: Checkpoint, image: ImagePath, box: Box = None, point: Point = None, mask: MaskPng = None,
    out: Out = None, device: Device = "auto", max_new_tokens: MaxNewTokens = 512, temperature: Temperature = 0.0,
    seed: Seed = 0,
) -> None:  # fmt: skip
    """A detailed localized caption of a region."""
    _check(checkpoint, image, out, device, max_new_tokens, temperature)
    region = _region(box, point, mask, image)
    predictor = _predictor(checkpoint, device, max_new_tokens, temperature, seed)
    prediction = predictor.predict(str(image), predictor.templates.describe(), [region])
    _emit(predictor, image, prediction, out, {"task": "describe"})


@app.command()
def classify(
    checkpoint: Checkpoint, image: ImagePath, box: Box = None, point: Point = None, mask: MaskPng = None,
    out: Out = None, device: Device = "auto", max_new_tokens: MaxNewTokens = 32, temperature: Temperature = 0.0,
    seed: Seed = 0,
) -> None:  # fmt: skip
    """The category of a region (referring object classification)."""
    _check(checkpoint, image, out, device, max_new_tokens, temperature)
    region = _region(box, point, mask, image)
    predictor = _predictor(checkpoint, device, max_new_tokens, temperature, seed)
    prediction = predictor.predict(str(image), predictor.templates.classify(), [region])
    _emit(predictor, image, prediction, out, {"task": "classify", "label": prediction.text.strip()})


@app.command()
def caption(
    checkpoint: Checkpoint, image: ImagePath, out: Out = None, device: Device = "auto",
    max_new_tokens: MaxNewTokens = 512, temperature: Temperature = 0.0, seed: Seed = 0,
) -> None:  # fmt: skip
    """A grounded caption: text, its <p> phrases and one mask per phrase (GLaMM's GCG format)."""
    from fclm_train.eval.gcg import parse_gcg_output

    _check(checkpoint, image, out, device, max_new_tokens, temperature)
    predictor = _predictor(checkpoint, device, max_new_tokens, temperature, seed)
    prediction = predictor.predict(str(image), predictor.templates.grounded_caption())
    text, phrases = parse_gcg_output(prediction.text)
    _emit(predictor, image, prediction, out, {"task": "caption", "caption": text, "phrases": phrases})


def check_checkpoint(path: Path) -> None:
    """A step directory (``trainer_state.json``) or a run directory holding one (``step-*/``); else one line."""
    if not path.exists():
        fail(f"--checkpoint {path} does not exist")
    if not path.is_dir():
        fail(f"--checkpoint {path} is not a directory (give a run directory or one of its step-N directories)")
    if not (path / "trainer_state.json").exists() and not any(path.glob("step-*/trainer_state.json")):
        fail(f"--checkpoint {path} holds no checkpoint (no trainer_state.json, no step-*/ with one)")


def check_device(device: str) -> None:
    """auto | cpu | cuda | cuda:N; a CUDA device that is not there is reported once torch is loaded."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        fail(f"--device {device!r} is not one of auto, cpu, cuda, cuda:N")


def _check(checkpoint: Path, image: Path, out: Path | None, device: str, max_new_tokens: int,
           temperature: float) -> None:  # fmt: skip
    """The plain mistakes, as one line each, before torch and the model load."""
    check_device(device)
    positive("--max-new-tokens", max_new_tokens)
    if temperature < 0:
        fail(f"--temperature must be >= 0, got {temperature}")
    check_checkpoint(checkpoint)
    _image_size("--image", image)
    if out is not None:
        output_file("--out", out)


def _image_size(option: str, path: Path) -> tuple[int, int]:
    """(width, height) of an image file, or one line saying why it is none."""
    from PIL import Image, UnidentifiedImageError

    existing_file(option, path)
    try:
        with Image.open(path) as image:
            image.verify()
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        fail(f"{option} {path} is not a readable image ({type(exc).__name__}: {exc})")


def _predictor(checkpoint: Path, device: str, max_new_tokens: int, temperature: float, seed: int):
    import torch

    from fclm_train.infer import GenerationConfig, Predictor

    if device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {device}: no CUDA device is available (use --device cpu)")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(seed)
    generation = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    return Predictor.from_checkpoint(checkpoint, device=device, dtype=dtype, generation=generation)


def _region(box: str | None, point: str | None, mask: Path | None, image: Path):
    """Exactly one of --box / --point / --mask as a region input (checked against the image's size)."""
    given = [name for name, value in (("--box", box), ("--point", point), ("--mask", mask)) if value is not None]
    if len(given) != 1:
        fail(f"give exactly one of --box, --point, --mask (got {', '.join(given) or 'none'})")
    width, height = _image_size("--image", image)
    if mask is not None:
        import numpy as np
        from PIL import Image

        if _image_size("--mask", mask) != (width, height):
            fail(f"--mask {mask} is {_image_size('--mask', mask)} (width, height), the image {(width, height)}")
        array = np.asarray(Image.open(mask))
        region = (array.max(axis=2) if array.ndim == 3 else array) > 0
        if not region.any():
            fail(f"--mask {mask} has no non-zero pixel")
        return region
    text, size = (box, 4) if box is not None else (point, 2)
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != size:
        fail(f"{given[0]} takes {size} comma-separated numbers, got {text!r}")
    if box is not None and not (0 <= values[0] < values[2] <= width and 0 <= values[1] < values[3] <= height):
        fail(f"--box {text} is not x0,y0,x1,y1 with x0 < x1 <= {width} and y0 < y1 <= {height} (the image's size)")
    if point is not None and not (0 <= values[0] < width and 0 <= values[1] < height):
        fail(f"--point {text} lies outside the {width}x{height} image")
    return values


def _emit(predictor, image: Path, prediction, out: Path | None, extra: dict) -> None:
    """The prediction as one JSON object on stdout (masks as RLEs with their boxes and areas)."""
    from fclm_data.masks import encode_mask
    from fclm_train.infer.predictor import mask_bbox

    masks = [{"rle": encode_mask(m), "bbox": mask_bbox(m), "area": int(m.sum())} for m in prediction.masks]
    body = {**extra, "prompt": prediction.prompt, "text": prediction.text, "stopped": prediction.stopped,
            "masks": masks}  # fmt: skip
    if out is not None:
        body["overlay"] = str(predictor.render(str(image), prediction, out))
    typer.echo(json.dumps(body, ensure_ascii=False))


if __name__ == "__main__":
    app()
