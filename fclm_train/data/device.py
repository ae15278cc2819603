"""Device-side preprocessing: compact worker batches -> :class:`~fclm_train.model.FCLMInputs` on the model's device.

Loader workers do only what must happen on the CPU (read the tar, parse the JSON, decode the JPEG at a reduced DCT
scale where it applies, decode RLE masks at their stored size, tokenise) and ship a :class:`CompactBatch`:

* the decoded images as one flat uint8 buffer, HWC as the decoder writes them (the device's float conversion does
  the transposition), or, with ``jpeg_decode="device"``, the JPEG bytes themselves;
* the masks bit-packed at their stored size (``np.packbits`` over column-major pixels, the layout ``decode_rle``
  returns, so packing copies nothing), 1/8 of a uint8 mask and 1/(8 x frame/image area) of a frame-sized bool;
* per ``<region>`` / ``[SEG]`` occurrence a small integer spec naming what to draw (:data:`PROMPT_MASK`,
  :data:`PROMPT_BOX`, :data:`PROMPT_DRAWN`).

:meth:`CompactBatch.prepare` then builds, on ``device`` and batched over images of one size, the Qwen2.5-VL patches
(bicubic, antialiased, the uint8 kernel's rounding emulated pass by pass), the SAM frame (bilinear, antialiased,
rounded to grey levels, normalised, zero-padded) and the frame-sized masks (nearest-exact, the same pixels as the
CPU path). Measured against the CPU path of ``vision.py`` (``image_tensors``, ``mask_to_frame``, ``prompts.py``),
which stays the reference: masks and prompts are equal; the Qwen patches and the SAM frame differ by at most 2 and
1 grey levels (0.030 and 0.018 after normalisation) on at most a few percent of pixels (uniform noise images, the
worst case; ``tests/train/test_data_device.py``). With ``jpeg_decode="device"`` the JPEG is decoded by nvJPEG
(``torchvision.io.decode_jpeg(device="cuda")``) at full size, falling back to the CPU (libjpeg-turbo) per batch and
then per image; a drafted CPU decode of a large original and a full decode differ in fine detail only.

Point and scribble prompts (opt-in ablations) are drawn in the worker with ``prompts.py`` (PIL rasterisation, seeded
from the region's frame mask) and travel as packed frames; mask and box prompts are drawn here.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fclm_data.masks import rle_runs
from fclm_train.model.inputs import FCLMInputs

from .vision import QWEN_MEAN, QWEN_STD, SAM_MEAN, SAM_STD, jpeg_frame, long_side_size, open_image, qwen_grid_size

log = logging.getLogger(__name__)

#: Region prompt kinds in a spec row ``(image, kind, a, b, c, d)``.
PROMPT_MASK = 0  #: a = mask index; (b, c) = the (x, y) frame pixel used when the mask vanishes on the frame
PROMPT_BOX = 1  #: (a, b, c, d) = (left, top, right, bottom) frame pixels, filled
PROMPT_DRAWN = 2  #: a = index of a frame drawn in the worker (point, scribble)
NO_MASK = -1  #: a [SEG] without ground truth (inference) / without ignore region


@dataclass
class ImageGeometry:
    """The model's image sizes (plain ints; a batch carries them)."""

    side: int = 1024
    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2


@dataclass
class CompactImage:
    """One sample's pixels and masks as the worker ships them."""

    original_size: tuple[int, int]  #: (H, W), also the masks' size
    pixels: torch.Tensor | None = None  #: (h, w, 3) uint8 as decoded (HWC), h x w <= H x W (reduced DCT scale)
    jpeg: bytes | None = None  #: the JPEG bytes, decoded by :meth:`CompactBatch.prepare` (``jpeg_decode="device"``)
    masks: list[np.ndarray] = dataclasses.field(default_factory=list)  #: bit-packed (H, W) masks, see :func:`pack_mask`
    drawn: list[np.ndarray] = dataclasses.field(default_factory=list)  #: bit-packed (S, S) prompt frames


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) {0, 1} -> (ceil(H*W/8),) uint8, column-major bit order (no copy for ``decode_rle``'s output)."""
    return np.packbits(mask.ravel(order="F"))


def pack_rle(rle: dict) -> np.ndarray:
    """A compressed RLE straight to :func:`pack_mask`'s bytes, via its run lengths (no pycocotools array).

    RLE runs are column-major like the packing, so the mask is the runs expanded in order; 4-5x faster than
    ``pack_mask(decode_rle(rle))`` on COCO-sized masks (the loader's largest per-sample cost after the JPEG).
    Raises ValueError when the counts do not tile the RLE's size (pycocotools would decode garbage).
    """
    height, width = rle["size"]
    runs = rle_runs(rle["counts"])
    if runs is None or (runs < 0).any() or int(runs.sum()) != height * width:
        raise ValueError(f"RLE counts do not tile its size {[height, width]}")
    values = np.zeros(runs.size, dtype=np.uint8)
    values[1::2] = 1  # runs alternate 0, 1, 0, ... from the first pixel
    return np.packbits(np.repeat(values, runs))


def pack_frame(frame: torch.Tensor) -> np.ndarray:
    """(S, S) bool frame -> packed like :func:`pack_mask`."""
    return pack_mask(frame.numpy())


def unpack_masks(packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(M, nbytes) uint8 -> (M, W, H) bool: the masks *transposed* (column-major packing)."""
    shifts = torch.arange(7, -1, -1, device=packed.device, dtype=torch.uint8)
    bits = (packed[:, :, None] >> shifts).bitwise_and_(1).view(packed.shape[0], packed.shape[1] * 8)
    bits = bits[:, : height * width]
    return bits.view(-1, width, height).bool()


#: tensors up to this size travel out of a loader worker inside the pickle; larger ones through shared memory
INLINE_TENSOR_BYTES = 1 << 16


class InlineSmallTensors:
    """Pickles a batch's small CPU tensors as numpy arrays, inline in the message.

    torch's DataLoader moves every tensor storage of a worker's batch into its own shared-memory segment (a file
    descriptor passed, mapped and unlinked per tensor): for a batch's ~20 small text and index tensors that cost
    ~10 ms a batch at 640x480 (measured), more than the JPEG decode. The pixel and mask buffers, already in shared
    memory (``collate``), keep that path; unpickling gives tensors over the arrays (no copy).
    """

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        inline = [name for name, value in state.items() if _inlinable(value)]
        for name in inline:
            state[name] = state[name].numpy()
        state["__inline__"] = inline
        return state

    def __setstate__(self, state: dict) -> None:
        inline = state.pop("__inline__", [])
        for name in inline:
            state[name] = torch.from_numpy(state[name])
        self.__dict__.update(state)


def _inlinable(value) -> bool:
    return (isinstance(value, torch.Tensor) and value.device.type == "cpu" and not value.requires_grad
            and value.numel() * value.element_size() <= INLINE_TENSOR_BYTES)  # fmt: skip


@dataclass
class FormatTargets(InlineSmallTensors):
    """A REF-VLM / MVP-LM batch's fields beyond :class:`FCLMInputs` (``fclm_train.data.format_rows``).

    Targets are numbered like ``seg_specs`` (row-major, reading order; their masks are ``seg_masks``); *outputs*
    are the occurrences of the format's output token (REF-VLM ``<REF>``, MVP-LM ``<PER>``) numbered row-major
    over ``input_ids``, as ``(input_ids == id).nonzero()`` lists them.
    """

    format: str  #: "refvlm" or "mvplm"
    boxes: torch.Tensor  #: (K, 4) float32: x0, y0, x1, y1 of each target in original-image pixels
    outputs: torch.Tensor  #: (K,) long: the output occurrence that decodes each target
    classes: torch.Tensor  #: (K,) long: MVP-LM's class (index in its turn's word list); -1 for REF-VLM
    units: torch.Tensor  #: (K,) long: 0 the mask is ground truth, 1 a box-only region (its mask is the box)
    output_batch_index: torch.Tensor  #: (O,) long: the row of each output occurrence
    word_based: torch.Tensor  #: (O,) bool: MVP-LM word-based turn (CE over its list); False: sentence / REF-VLM
    #: (W, 4) long (row, output, start, end): each name's token span [start, end) in input_ids[row], in list
    #: order, ``output`` being its turn's ``<PER>`` (a sentence-based turn: its expression); (0, 4) for REF-VLM
    word_spans: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = True) -> FormatTargets:
        return dataclasses.replace(self, **{name: value.to(device, non_blocking=non_blocking)
                                            for name, value in self._tensors().items()})  # fmt: skip

    def pin_memory(self) -> FormatTargets:
        return dataclasses.replace(self, **{name: value.pin_memory() for name, value in self._tensors().items()})

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)}  # fmt: skip


@dataclass
class CompactBatch(InlineSmallTensors):
    """What a loader worker yields: text tensors final, pixels and masks compact (see the module docstring)."""

    input_ids: torch.Tensor  #: (B, T) long
    attention_mask: torch.Tensor  #: (B, T) long
    labels: torch.Tensor  #: (B, T) long
    image_grid_thw: torch.Tensor  #: (B, 3) long
    sam_input_sizes: torch.Tensor  #: (B, 2) long
    original_sizes: torch.Tensor  #: (B, 2) long
    region_batch_index: torch.Tensor  #: (R,) long
    seg_batch_index: torch.Tensor  #: (K,) long
    consistency_pairs: torch.Tensor  #: (P, 2) long
    image_token_id: int
    geometry: ImageGeometry
    row_image: torch.Tensor  #: (B,) long, the image of each row (a paired sample's two rows share one)
    image_sizes: torch.Tensor  #: (N, 4) long: original (H, W), shipped pixels (h, w) -- (0, 0) for a JPEG
    pixel_data: torch.Tensor  #: flat uint8: the shipped pixels of every image, (h, w, 3) each, in order
    jpeg_data: torch.Tensor  #: flat uint8: the JPEG bytes of images decoded here
    jpeg_sizes: torch.Tensor  #: (N,) long bytes per image (0: pixels shipped)
    mask_counts: torch.Tensor  #: (N,) long masks per image, packed at (H, W), in mask_data
    mask_data: torch.Tensor  #: flat uint8
    drawn_counts: torch.Tensor  #: (N,) long packed (S, S) frames per image, in drawn_data
    drawn_data: torch.Tensor  #: flat uint8
    region_specs: torch.Tensor  #: (R, 6) long (image, kind, a, b, c, d)
    seg_specs: torch.Tensor  #: (K, 2) long (image, mask index or NO_MASK)
    ignore_specs: torch.Tensor | None  #: (K, 2) long like seg_specs; None when no [SEG] has an ignore region
    seed: int = 0
    #: REF-VLM / MVP-LM batches: boxes, classes, word spans (``targets.to(device)``); None for FCLM batches.
    #: Their ``prepare()`` gives the same tensors as FCLM's: [VPT] prompts in ``region_masks``, targets' masks
    #: in ``seg_masks`` (the FCLM model's own check, ``FCLMInputs.validate``, does not apply to them)
    targets: FormatTargets | None = None

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    def pin_memory(self) -> CompactBatch:
        """Page-locked copies (the DataLoader's pinning thread) so the host-to-device copies overlap compute."""
        pinned = dataclasses.replace(self, **{f.name: getattr(self, f.name).pin_memory()
                                              for f in dataclasses.fields(self)
                                              if isinstance(getattr(self, f.name), torch.Tensor)})  # fmt: skip
        if self.targets is not None:
            pinned.targets = self.targets.pin_memory()
        return pinned

    def prepare(self, device: torch.device | str = "cpu") -> FCLMInputs:
        """The model's batch on ``device``: Qwen patches, SAM frames and frame-sized masks built there."""
        device = torch.device(device)
        patches, frames = self._pixel_tensors(device)
        masks, drawn = self._mask_frames(device)
        text = {name: getattr(self, name).to(device, non_blocking=True) for name in (
            "input_ids", "attention_mask", "labels", "image_grid_thw", "sam_input_sizes", "original_sizes",
            "region_batch_index", "seg_batch_index", "consistency_pairs")}  # fmt: skip
        return FCLMInputs(
            **text, pixel_values=torch.cat([patches[i] for i in self.row_image.tolist()]),
            mm_token_type_ids=(text["input_ids"] == self.image_token_id).int(),
            sam_images=frames[self.row_image.to(device)],
            region_masks=self._regions(masks, drawn, device), seg_masks=self._refs(self.seg_specs, masks),
            seg_ignore=None if self.ignore_specs is None else self._refs(self.ignore_specs, masks), seed=self.seed,
        )  # fmt: skip

    def _pixel_tensors(self, device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(Qwen patches per image, (N, 3, S, S) SAM frames): one batched resize per (original, shipped) size."""
        geo = self.geometry
        images = self._images(device)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (H, W, *_) in enumerate(self.image_sizes.tolist()):
            groups.setdefault((H, W, *images[i].shape[1:]), []).append(i)
        patches: list[torch.Tensor] = [torch.empty(0)] * len(images)
        frames = torch.zeros(len(images), 3, geo.side, geo.side, device=device)
        for (H, W, _, _), members in groups.items():
            stack = torch.stack([images[i] for i in members])
            for i, p in zip(members, qwen_patches_batch(stack, (H, W), geo)):
                patches[i] = p
            h, w = long_side_size(H, W, geo.side)
            frames[members, :, :h, :w] = sam_inside_batch(stack, (h, w))
        return patches, frames

    # ------------------------------------------------------------------------------------------- images
    def _images(self, device: torch.device) -> list[torch.Tensor]:
        """(3, h, w) uint8 per image on ``device``: the shipped pixels, or the JPEGs decoded here."""
        data = self.pixel_data.to(device, non_blocking=True)
        out, offset, jpegs = [], 0, []
        for (_, _, h, w), n in zip(self.image_sizes.tolist(), self.jpeg_sizes.tolist()):
            out.append(data[offset : offset + 3 * h * w].view(h, w, 3).permute(2, 0, 1))  # HWC as decoded
            offset += 3 * h * w
            if n:
                jpegs.append(len(out) - 1)
        if jpegs:
            sizes = self.jpeg_sizes.tolist()
            decoded = decode_jpegs(_split(self.jpeg_data, [sizes[i] for i in jpegs]), device)
            for i, image in zip(jpegs, decoded):
                out[i] = image
        return out

    # ------------------------------------------------------------------------------------------- masks
    def _mask_frames(self, device: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per image: (M + 1, S, S) bool frames of its masks (the last plane empty: NO_MASK), its drawn frames."""
        side = self.geometry.side
        data = self.mask_data.to(device, non_blocking=True)
        drawn_data = self.drawn_data.to(device, non_blocking=True)
        frame_bytes = math.ceil(side * side / 8)
        masks, drawn, offset, drawn_offset = [], [], 0, 0
        counts = zip(self.image_sizes.tolist(), self.mask_counts.tolist(), self.drawn_counts.tolist())
        for (H, W, *_), m, d in counts:
            nbytes = math.ceil(H * W / 8)
            packed = data[offset : offset + m * nbytes].view(m, nbytes)
            offset += m * nbytes
            masks.append(masks_to_frames(packed, (H, W), side))
            packed = drawn_data[drawn_offset : drawn_offset + d * frame_bytes].view(d, frame_bytes)
            drawn_offset += d * frame_bytes
            drawn.append(unpack_masks(packed, side, side).transpose(1, 2))
        return masks, drawn

    def _refs(self, specs: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
        """(K, S, S) bool: mask ``index`` of image ``image`` per spec row, empty for NO_MASK."""
        side = self.geometry.side
        if specs.shape[0] == 0:
            return torch.zeros(0, side, side, dtype=torch.bool, device=masks[0].device if masks else None)
        return torch.stack([masks[i][j] for i, j in specs.tolist()])  # j = -1: the empty last plane

    def _regions(self, masks: list[torch.Tensor], drawn: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        """(R, S, S) bool region prompts: masks (the centre pixel where one vanishes), boxes, drawn frames."""
        side = self.geometry.side
        specs = self.region_specs.tolist()
        out = torch.zeros(len(specs), side, side, dtype=torch.bool, device=device)
        centre: list[tuple[int, int, int]] = []
        for r, (image, kind, a, b, c, d) in enumerate(specs):
            if kind == PROMPT_MASK:
                out[r] = masks[image][a]
                centre.append((r, c, b))
            elif kind == PROMPT_BOX:
                out[r, b:d, a:c] = True
            elif kind == PROMPT_DRAWN:
                out[r] = drawn[image][a]
            else:
                raise ValueError(f"unknown region prompt kind {kind}")
        if centre:  # a region thinner than a frame pixel keeps its centre pixel (no host sync: a masked write)
            index = torch.tensor(centre, dtype=torch.long, device=device)
            empty = ~out[index[:, 0]].flatten(1).any(1)
            out[index[:, 0], index[:, 1], index[:, 2]] |= empty
        return out


# ----------------------------------------------------------------------------------------------- batched ops
def qwen_patches_batch(images: torch.Tensor, original: tuple[int, int], geo: ImageGeometry) -> list[torch.Tensor]:
    """(n, 3, h0, w0) uint8 of one original size -> n x (gh * gw, 3 * temporal * patch^2) float patches.

    The resize runs as two passes, width then height, each rounded to uint8 like torch's CPU uint8 kernel (which
    the CPU path and the processor's CPU fast path use); a single float pass would differ wherever bicubic
    overshoots, by up to ~20 grey levels on noise.
    """
    h, w = qwen_grid_size(*original, geo.side, geo.patch_size, geo.merge_size)
    x = _resize_uint8_passes(images, (h, w), "bicubic")
    n, p, m = x.shape[0], geo.patch_size, geo.merge_size
    gh, gw = h // p, w // p
    x = x.view(n, 3, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)  # (n, gh/m, gw/m, m, m, 3, p, p)
    x = x.reshape(n * gh * gw, 3, p * p)
    scale, shift = _qwen_affine(x.device)
    x = x.mul_(scale).sub_(shift)  # (x / 255 - mean) / std
    x = x[:, :, None, :].expand(-1, -1, geo.temporal_patch_size, -1).reshape(n, gh * gw, -1)
    return list(x)


def sam_inside_batch(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(n, 3, h0, w0) uint8 -> (n, 3, h, w) SAM-normalised: one bilinear antialiased pass, rounded to grey levels
    (the CPU path's uint8 output; within half a level of segment-anything's float preprocessing)."""
    x = images.float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).round_().clamp_(0, 255)
    mean, std = _sam_stats(x.device)
    return x.sub_(mean).div_(std)


def masks_to_frames(packed: torch.Tensor, size: tuple[int, int], side: int) -> torch.Tensor:
    """(M, nbytes) packed (H, W) masks -> (M + 1, S, S) bool on the SAM frame (nearest-exact, zero padded); the
    extra last plane is empty (what :data:`NO_MASK` selects)."""
    H, W = size
    h, w = long_side_size(H, W, side)
    frames = torch.zeros(packed.shape[0] + 1, side, side, dtype=torch.bool, device=packed.device)
    if packed.shape[0]:
        transposed = unpack_masks(packed, H, W).to(torch.uint8)[:, None]  # (M, 1, W, H)
        resized = F.interpolate(transposed, size=(w, h), mode="nearest-exact")[:, 0]  # separable: same pixels
        frames[:-1, :h, :w] = resized.transpose(1, 2).bool()
    return frames


def decode_jpegs(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """JPEG bytes -> (3, H, W) uint8 RGB on ``device``: nvJPEG on CUDA, libjpeg-turbo on the CPU; a batch that
    fails falls back to one image at a time, and an image that fails there to PIL on the CPU."""
    target = "cuda" if device.type == "cuda" else "cpu"
    try:
        return [x.to(device) for x in _decode_jpeg(data, target)]
    except RuntimeError as exc:
        log.warning("batched JPEG decode on %s failed (%s); decoding one image at a time", target, exc)
    out = []
    for one in data:
        try:
            out.append(_decode_jpeg(one, target).to(device))
        except RuntimeError:
            out.append(open_image(one.numpy().tobytes(), side=1, draft=False)[0].to(device))  # PIL: any JPEG
    return out


def _decode_jpeg(data, device: str):
    """``torchvision.io.decode_jpeg`` (RGB); torchvision 0.29 deprecates its codecs for torchcodec, they still work."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def _resize_uint8_passes(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(n, 3, h0, w0) uint8 -> (n, 3, *size) float holding integers 0..255: antialiased, width pass then height
    pass, each rounded and clamped (the uint8 kernel's order and intermediate precision)."""
    x = images.float()
    h0, w0 = x.shape[-2:]
    if size[1] != w0:
        x = F.interpolate(x, size=(h0, size[1]), mode=mode, antialias=True, align_corners=False).round_().clamp_(0, 255)
    if size[0] != h0:
        x = F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False).round_().clamp_(0, 255)
    return x


def _qwen_affine(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = torch.tensor(QWEN_MEAN, device=device), torch.tensor(QWEN_STD, device=device)
    return (1 / 255 / std).view(1, 3, 1), (mean / std).view(1, 3, 1)


def _sam_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(SAM_MEAN, device=device).view(1, 3, 1, 1), torch.tensor(SAM_STD, device=device).view(1, 3, 1, 1)


def _split(flat: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    """Consecutive pieces of a flat CPU buffer (the JPEG decoders take one tensor per image)."""
    ends = np.cumsum([0, *sizes]).tolist()
    return [flat[start:end] for start, end in zip(ends[:-1], ends[1:])]


# ----------------------------------------------------------------------------------------------- building
def compact_batch(
    *, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, image_token_id: int,
    geometry: ImageGeometry, images: list[CompactImage], row_image: list[int], grids: list[tuple[int, int, int]],
    region_specs: list[list[tuple[int, ...]]], seg_specs: list[list[int]], ignore_specs: list[list[int]],
    consistency_pairs: torch.Tensor, seed: int = 0, allocate=None, targets: FormatTargets | None = None,
) -> CompactBatch:  # fmt: skip
    """A :class:`CompactBatch` from per-row lists (``*_specs[b]``: row b's occurrences, in reading order; region
    specs ``(kind, a, b, c, d)``, [SEG] and ignore specs a mask index or NO_MASK, all local to the row's image).

    ``allocate(numel, dtype)`` provides the flat buffers (a loader worker passes shared memory).
    """
    allocate = allocate or (lambda n, dtype: torch.empty(n, dtype=dtype))
    side = geometry.side
    sam_sizes = [long_side_size(*image.original_size, side) for image in images]
    pixel = [image.pixels.reshape(-1) for image in images if image.pixels is not None]
    jpeg = [np.frombuffer(image.jpeg, dtype=np.uint8) for image in images if image.jpeg is not None]
    masks = [m for image in images for m in image.masks]
    drawn = [m for image in images for m in image.drawn]
    shipped = [(0, 0) if image.pixels is None else tuple(image.pixels.shape[:2]) for image in images]
    has_ignore = any(k != NO_MASK for row in ignore_specs for k in row)
    region_rows = [len(specs) for specs in region_specs]
    seg_rows = [len(specs) for specs in seg_specs]
    return CompactBatch(
        input_ids=input_ids, attention_mask=attention_mask, labels=labels,
        image_grid_thw=torch.tensor(grids, dtype=torch.long).view(-1, 3),
        sam_input_sizes=torch.tensor([sam_sizes[i] for i in row_image], dtype=torch.long).view(-1, 2),
        original_sizes=torch.tensor([images[i].original_size for i in row_image], dtype=torch.long).view(-1, 2),
        region_batch_index=_row_index(region_rows), seg_batch_index=_row_index(seg_rows),
        consistency_pairs=consistency_pairs, image_token_id=image_token_id, geometry=geometry,
        row_image=torch.tensor(row_image, dtype=torch.long),
        image_sizes=torch.tensor([(*image.original_size, *s) for image, s in zip(images, shipped)],
                                 dtype=torch.long).view(-1, 4),  # fmt: skip
        pixel_data=_flat([p.numpy() for p in pixel], allocate),
        jpeg_data=_flat(jpeg, allocate),
        jpeg_sizes=torch.tensor([0 if image.jpeg is None else len(image.jpeg) for image in images], dtype=torch.long),
        mask_counts=torch.tensor([len(image.masks) for image in images], dtype=torch.long),
        mask_data=_flat(masks, allocate),
        drawn_counts=torch.tensor([len(image.drawn) for image in images], dtype=torch.long),
        drawn_data=_flat(drawn, allocate),
        region_specs=torch.tensor([(row_image[b], *spec) for b, specs in enumerate(region_specs) for spec in specs],
                                  dtype=torch.long).view(-1, 6),  # fmt: skip
        seg_specs=torch.tensor([(row_image[b], k) for b, specs in enumerate(seg_specs) for k in specs],
                               dtype=torch.long).view(-1, 2),  # fmt: skip
        ignore_specs=torch.tensor([(row_image[b], k) for b, specs in enumerate(ignore_specs) for k in specs],
                                  dtype=torch.long).view(-1, 2) if has_ignore else None,  # fmt: skip
        seed=seed, targets=targets,
    )  # fmt: skip


def _flat(parts: list[np.ndarray], allocate) -> torch.Tensor:
    """One flat uint8 tensor of all parts (one buffer, one shared-memory segment, one host-to-device copy)."""
    out = allocate(sum(p.size for p in parts), torch.uint8)
    view, offset = out.numpy(), 0
    for part in parts:
        view[offset : offset + part.size] = part.reshape(-1)
        offset += part.size
    return out


def _row_index(counts: list[int]) -> torch.Tensor:
    """(N,) long: the row of each occurrence, row-major ([2, 0, 1] -> [0, 0, 2])."""
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts, dtype=torch.long))


def jpeg_header(data: bytes) -> tuple[str, tuple[int, int], str]:
    """(format, (H, W), mode) from an image's header, no pixel decoded."""
    from PIL import Image

    frame = jpeg_frame(data)
    if frame is not None and frame[2] in (1, 3):
        return "JPEG", frame[:2], "L" if frame[2] == 1 else "RGB"
    with Image.open(io.BytesIO(data)) as image:
        return image.format, (image.height, image.width), image.mode
