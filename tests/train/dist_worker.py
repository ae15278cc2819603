"""Launched by ``test_distributed.py`` under torchrun: train from a JSON TrainConfig, then record what each rank holds.

Rank 0 writes ``OUT/ranks.json``: per rank, a SHA-256 over its parameters in name order (the full tensors under
DDP, this rank's shards under FSDP2) and the number of batches its loader consumed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from fclm_train import distributed as D
from fclm_train.config import TrainConfig
from fclm_train.train import Trainer

torch.set_num_threads(1)


def main() -> None:
    cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
    trainer = Trainer(cfg)
    trainer.setup()
    try:
        trainer.train()
        digest = hashlib.sha256()
        for _, param in sorted(D.unwrap(trainer.model).named_parameters()):
            local = param.to_local() if hasattr(param, "to_local") else param
            digest.update(local.detach().float().cpu().numpy().tobytes())
        ranks = D.all_gather_objects({"digest": digest.hexdigest(), "batches": trainer.loader.state.batches})
        if trainer.info.is_main:
            (Path(cfg.out_dir) / "ranks.json").write_text(json.dumps(ranks))
    finally:
        trainer.cleanup()


if __name__ == "__main__":
    main()
