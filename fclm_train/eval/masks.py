"""Mask inputs shared by the metrics: numpy arrays or COCO RLEs -> boolean (H, W) arrays.

The metrics take masks at the original image resolution, either as arrays (bool or integer
{0, 1}) or as the compressed RLEs our shards store. Values other than 0/1 are refused rather than
thresholded: a GT carrying LISA's 255 "ignore" value would otherwise count as foreground.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from fclm_data.masks import RLE, decode_rle, encode_mask

MaskLike = np.ndarray | RLE


def as_bool_mask(mask: MaskLike, what: str = "mask") -> np.ndarray:
    """A (H, W) boolean array from a bool / {0, 1} integer array or a compressed RLE.

    Raises:
        TypeError: for float arrays (logits or probabilities must be thresholded by the caller).
        ValueError: for arrays that are not 2-D or hold values other than 0 and 1.
    """
    if isinstance(mask, dict):
        return decode_rle(as_rle(mask)).astype(bool)
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-D (H, W), got shape {array.shape}")
    if array.dtype == bool:
        return array
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{what} has dtype {array.dtype}; threshold logits/probabilities before scoring")
    if ((array != 0) & (array != 1)).any():
        raise ValueError(
            f"{what} holds values other than 0/1 (e.g. 255): pass ignore pixels as a separate `ignore` mask"
        )
    return array.astype(bool)


def as_rle(mask: MaskLike) -> RLE:
    """A compressed RLE with ASCII counts (the form pycocotools and our shards use)."""
    if not isinstance(mask, dict):
        return encode_mask(as_bool_mask(mask))
    height, width = int(mask["size"][0]), int(mask["size"][1])
    counts = mask["counts"]
    if isinstance(counts, list):  # uncompressed RLE (SAM / GLaMM's mask_to_rle_* output)
        counts = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [height, width], "counts": counts}
