# medlab: `make demo` trains on the bundled sample data through templates/train.ipynb; `make test` runs the tests.
# Both set up .venv first. torch is pinned here (2.13.0 has a CPU build on these machines); setup.py keeps it loose.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
RUN_DIR ?= runs

.PHONY: setup demo test browser clean-runs

$(BIN)/medlab-ready: setup.py settings.ini
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/medlab-ready

demo: setup
	$(BIN)/python -c "import medlab; print('sample data:', medlab.make_sample_data('$(RUN_DIR)/sample_data/seg2d', sites=3))"
	$(BIN)/papermill templates/train.ipynb $(RUN_DIR)/train_seg2d.ipynb --cwd templates \
		-p config configs/seg2d_sample.yaml -p data_csv ../$(RUN_DIR)/sample_data/seg2d/data.csv \
		-p output_dir ../$(RUN_DIR)/train_seg2d
	@echo "Results: $(RUN_DIR)/train_seg2d (metrics.json, checkpoints, logs, training_curves.png);" \
		"executed notebook: $(RUN_DIR)/train_seg2d.ipynb"
	@cat $(RUN_DIR)/train_seg2d/metrics.json

# Chromium from Debian for the JupyterLab panel test (needs root and apt; elsewhere that test skips and says why)
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "no chromium: the browser test will skip"; }

test: setup browser
	$(BIN)/python -m pytest tests -q

clean-runs:
	rm -rf $(RUN_DIR)
