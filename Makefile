# Two entry points, both self-contained on a fresh machine (see README.md).
PYTHON ?= python3
PIP := $(PYTHON) -m pip
PYTEST_ARGS ?=
DEMO := shards/demo

.PHONY: install quickstart test

# torch/torchvision come from the registry (CUDA builds; they also run on CPU) -- see pyproject.toml.
install:
	$(PIP) install --quiet --disable-pip-version-check -e ".[all]"

# Generate a small data root in the official release layouts, build it with the stage2 recipe
# (and the RefCOCO family), inspect the shards, render overlays and write the HTML report; then train the tiny model
# on those shards for a minute or two (recipes/train/quickstart.yaml: its loss falls) and ask the trained model about a
# demo image.
QUICKSTART_RUN := runs/quickstart
DEMO_IMAGE := $(DEMO)/data/coco/train2014/COCO_train2014_000000000007.jpg

quickstart: install
	$(PYTHON) -m fclm_data.cli demo-data $(DEMO)/data
	$(PYTHON) -m fclm_data.cli build --recipe stage2 --data-root $(DEMO)/data --out $(DEMO)/stage2 --overwrite
	$(PYTHON) -m fclm_data.cli build --source refcoco --source refcoco_plus --source refcocog --data-root $(DEMO)/data --out $(DEMO)/refcoco --overwrite
	$(PYTHON) -m fclm_data.cli inspect $(DEMO)/stage2 --strict --render $(DEMO)/stage2/overlays -n 6
	$(PYTHON) -m fclm_data.cli report $(DEMO)/stage2
	$(PYTHON) -m fclm_data.cli inspect $(DEMO)/stage2/shard-000000.tar --json -n 1
	rm -rf $(QUICKSTART_RUN)
	$(PYTHON) -m fclm_train.cli --recipe recipes/train/quickstart.yaml --out $(QUICKSTART_RUN)
	$(PYTHON) -m fclm_train.infer.cli segment --checkpoint $(QUICKSTART_RUN) --image $(DEMO_IMAGE) --text "white circle" --max-new-tokens 16 --out $(QUICKSTART_RUN)/segment.png
	$(PYTHON) -m fclm_train.infer.cli describe --checkpoint $(QUICKSTART_RUN) --image $(DEMO_IMAGE) --box 174,127,260,213 --max-new-tokens 32 --out $(QUICKSTART_RUN)/describe.png
	@echo "quickstart: loss curve in $(QUICKSTART_RUN)/metrics.jsonl, overlays $(QUICKSTART_RUN)/segment.png and describe.png"

# Run from the repository root (pyproject's testpaths); pytest exits 5 if it collects nothing, and make fails.
test: install
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)
