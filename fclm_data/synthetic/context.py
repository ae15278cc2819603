"""Shared state of one synthetic data root: the seed, the scale and the synthetic COCO images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fclm_data.synthetic.scenes import Scene, SceneSpec, make_scene

#: COCO 2014 train names carry the split; 2017 names are the bare zero-padded id.
COCO_2014 = "coco/train2014/COCO_train2014_{id:012d}.jpg"
COCO_2017 = {"train": "coco/train2017/{id:012d}.jpg", "val": "coco/val2017/{id:012d}.jpg"}


@dataclass
class SynthContext:
    root: Path
    seed: int = 0
    scale: int = 1
    image_size: tuple[int, int] = (320, 240)
    scene_spec: SceneSpec | None = None  #: scene difficulty; None = the demo scenes
    _coco: dict[int, Scene] = field(default_factory=dict)

    def rng(self, family: str) -> np.random.Generator:
        """An independent stream per family, so adding a family does not change the others."""
        return np.random.default_rng([self.seed, sum(map(ord, family)) * 7919 + len(family)])

    def count(self, base: int) -> int:
        return base * self.scale

    def coco_image(self, image_id: int) -> Scene:
        """Synthetic COCO image ``image_id``, written on first use to train2014 *and* 2017.

        As in reality, a train2014 image reappears in COCO 2017 (train for even ids, val for odd
        ids here), which is what makes train/eval leakage across sources possible.
        """
        if image_id not in self._coco:
            scene = self.scene(np.random.default_rng([self.seed, 104729, image_id]))
            data = scene.jpeg_bytes()
            split2017 = "train" if image_id % 2 == 0 else "val"
            for rel in (COCO_2014.format(id=image_id), COCO_2017[split2017].format(id=image_id)):
                self.write_bytes(rel, data)
            self._coco[image_id] = scene
        return self._coco[image_id]

    def scene(self, rng: np.random.Generator) -> Scene:
        """A scene of this root's size and difficulty."""
        return make_scene(rng, *self.image_size, spec=self.scene_spec)

    def write_bytes(self, rel: str, data: bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def write_text(self, rel: str, text: str) -> Path:
        return self.write_bytes(rel, text.encode("utf-8"))
