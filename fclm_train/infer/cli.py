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
from pathlib import Path
from typing import Annotated, Optional

import typer

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
    predictor = _predictor(checkpoint, device, max_new_tokens, temperature, seed)
    prediction = predictor.predict(str(image), predictor.templates.describe(), [_region(box, point, mask)])
    _emit(predictor, image, prediction, out, {"task": "describe"})


@app.command()
def classify(
    checkpoint: Checkpoint, image: ImagePath, box: Box = None, point: Point = None, mask: MaskPng = None,
    out: Out = None, device: Device = "auto", max_new_tokens: MaxNewTokens = 32, temperature: Temperature = 0.0,
    seed: Seed = 0,
) -> None:  # fmt: skip
    """The category of a region (referring object classification)."""
    predictor = _predictor(checkpoint, device, max_new_tokens, temperature, seed)
    prediction = predictor.predict(str(image), predictor.templates.classify(), [_region(box, point, mask)])
    _emit(predictor, image, prediction, out, {"task": "classify", "label": prediction.text.strip()})


@app.command()
def caption(
    checkpoint: Checkpoint, image: ImagePath, out: Out = None, device: Device = "auto",
    max_new_tokens: MaxNewTokens = 512, temperature: Temperature = 0.0, seed: Seed = 0,
) -> None:  # fmt: skip
    """A grounded caption: text, its <p> phrases and one mask per phrase (GLaMM's GCG format)."""
    from fclm_train.eval.gcg import parse_gcg_output

    predictor = _predictor(checkpoint, device, max_new_tokens, temperature, seed)
    prediction = predictor.predict(str(image), predictor.templates.grounded_caption())
    text, phrases = parse_gcg_output(prediction.text)
    _emit(predictor, image, prediction, out, {"task": "caption", "caption": text, "phrases": phrases})


def _predictor(checkpoint: Path, device: str, max_new_tokens: int, temperature: float, seed: int):
    import torch

    from fclm_train.infer import GenerationConfig, Predictor

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(seed)
    generation = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    return Predictor.from_checkpoint(checkpoint, device=device, dtype=dtype, generation=generation)


def _region(box: str | None, point: str | None, mask: Path | None):
    """Exactly one of --box / --point / --mask as a region input."""
    given = [name for name, value in (("--box", box), ("--point", point), ("--mask", mask)) if value is not None]
    if len(given) != 1:
        raise typer.BadParameter(f"give exactly one of --box, --point, --mask (got {given or 'none'})")
    if mask is not None:
        import numpy as np
        from PIL import Image

        array = np.asarray(Image.open(mask))
        return (array.max(axis=2) if array.ndim == 3 else array) > 0
    text, size = (box, 4) if box is not None else (point, 2)
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != size:
        raise typer.BadParameter(f"{given[0]} takes {size} comma-separated numbers, got {text!r}")
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
