# The two README commands: `make quickstart` (set up, train + evaluate on synthetic data, overlays)
# and `make test` (the whole suite; .ci/run calls it). Both are idempotent.
PYTHON ?= python3
QUICKSTART_CONFIG := configs/quickstart/mask_rcnn_R_18_FPN_synthetic.yaml
QUICKSTART_OUTPUT := output/quickstart/mask_rcnn_R_18_FPN_synthetic
DETECTRON2_GIT := git+https://github.com/facebookresearch/detectron2.git

.PHONY: setup install detectron2 quickstart test lint benchmark-mask-scoring

# Installs d2seg (editable) and its extras; skipped while .setup-done is newer than the two
# dependency files and this checkout is the installed one (a fresh clone always installs).
setup:
	@if [ -f .setup-done ] && [ .setup-done -nt pyproject.toml ] && \
	  [ .setup-done -nt constraints-dev.txt ] && $(PYTHON) -c "$$INSTALLED_HERE"; then \
	  echo "setup: d2seg is installed from this checkout (delete .setup-done to reinstall)"; \
	else $(MAKE) --no-print-directory install && touch .setup-done; fi

install: detectron2
	$(PYTHON) -m pip install -q --no-build-isolation -c constraints-dev.txt -e '.[dev,fast-eval]'
	$(PYTHON) -m pip install -q --no-deps panopticapi-lite==0.2.0

define INSTALLED_HERE
import json, os, sys, importlib.metadata as m
url = json.loads(m.distribution("d2seg").read_text("direct_url.json"))["url"]
sys.exit(url != "file://" + os.getcwd())
endef
export INSTALLED_HERE

# detectron2 is not on PyPI: use the installed one, else install it from its repository.
detectron2:
	@$(PYTHON) -c "import detectron2" 2>/dev/null && echo "detectron2 found" || { \
	  echo "detectron2 is not importable: installing it from $(DETECTRON2_GIT)"; \
	  $(PYTHON) -m pip install -q -c constraints-dev.txt torch torchvision 'setuptools<81' && \
	  $(PYTHON) -m pip install --no-build-isolation -c constraints-dev.txt '$(DETECTRON2_GIT)' || { \
	    echo "ERROR: could not install detectron2 (it needs git, a C++ compiler and network access)."; \
	    echo "Install it by hand as the README says, then run this command again."; exit 1; }; }

quickstart: setup
	$(PYTHON) datasets/prepare_synthetic.py
	$(PYTHON) tools/train_net.py --config-file $(QUICKSTART_CONFIG) OUTPUT_DIR $(QUICKSTART_OUTPUT)
	$(PYTHON) tools/demo.py --config-file $(QUICKSTART_CONFIG) --dataset d2seg_synthetic_instance_val \
	  --num-images 4 --output $(QUICKSTART_OUTPUT)/overlays MODEL.WEIGHTS $(QUICKSTART_OUTPUT)/model_final.pth
	@$(PYTHON) -c 'import json, sys; r = [m for m in map(json.loads, open(sys.argv[1])) if "segm/AP" in m][-1]; \
	  print("quickstart reached box AP %.1f, mask AP %.1f on d2seg_synthetic_instance_val" % (r["bbox/AP"], r["segm/AP"]))' \
	  $(QUICKSTART_OUTPUT)/metrics.json
	@echo "report:   $(QUICKSTART_OUTPUT)/inference/d2seg_synthetic_instance_val/report.html"
	@echo "overlays: $(QUICKSTART_OUTPUT)/overlays/"

test: setup
	$(PYTHON) -m pytest -q

# ruff is a dev dependency (`make setup` installs it); CI runs this before the tests.
lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

# Mask Scoring R-CNN vs Mask R-CNN after the quickstart schedule (trains whichever is missing).
benchmark-mask-scoring: setup
	@for name in mask_rcnn_R_18_FPN_synthetic mask_scoring_rcnn_R_18_FPN_synthetic; do \
	  test -f output/quickstart/$$name/model_final.pth || \
	  $(PYTHON) tools/train_net.py --config-file configs/quickstart/$$name.yaml \
	    OUTPUT_DIR output/quickstart/$$name || exit 1; done
	$(PYTHON) benchmarks/mask_scoring.py
