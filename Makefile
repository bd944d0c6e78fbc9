PYTHON ?= python3
DEMO_DIR ?= demo_output

.PHONY: install test demo bench lint

install:
	$(PYTHON) -m pip install -r requirements-dev.txt

test:
	$(PYTHON) -m pytest

demo: install
	$(PYTHON) tools/demo.py --output_dir $(DEMO_DIR)

bench:
	$(PYTHON) benchmarks/bench_peers.py
	$(PYTHON) benchmarks/bench_model.py
	$(PYTHON) benchmarks/bench_data.py
	$(PYTHON) benchmarks/bench_eval.py

lint:
	$(PYTHON) -m ruff check .
