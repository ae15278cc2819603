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
# (and the RefCOCO family), then inspect the shards and render overlays.
quickstart: install
	fclm-data demo-data $(DEMO)/data
	fclm-data build --recipe stage2 --data-root $(DEMO)/data --out $(DEMO)/stage2 --overwrite
	fclm-data build --source refcoco --source refcoco_plus --source refcocog --data-root $(DEMO)/data --out $(DEMO)/refcoco --overwrite
	fclm-data inspect $(DEMO)/stage2 --strict --render $(DEMO)/stage2/overlays -n 6
	fclm-data inspect $(DEMO)/stage2/shard-000000.tar --json -n 1

# Run from the repository root (pyproject's testpaths); pytest exits 5 if it collects nothing, and make fails.
test: install
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)
