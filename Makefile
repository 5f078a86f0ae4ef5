# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pip takes both from this machine's disk (see README); keep the pair together.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test benchmark clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e '.[test]' $(TORCH_PINS)
	touch $@

demo: install
	$(BIN)/kidneyseg demo -o demo_output --overwrite

test: install
	# two workers on two cores: OpenMP threads that wait sleep instead of spinning (measured:
	# 536 s instead of 649-873 s, CPU time 15.5 instead of 19.6-26.9 minutes)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25

benchmark: install
	$(BIN)/python benchmarks/mr_kidney.py
	$(BIN)/python benchmarks/metrics_speed.py
	$(BIN)/python benchmarks/kidneyus_interobserver.py
	$(BIN)/python benchmarks/unsupervised.py
	$(BIN)/python benchmarks/kidneyus_reader.py
	$(BIN)/python benchmarks/us_phantoms.py
	$(BIN)/python benchmarks/us_ensemble_chaos.py
	$(BIN)/python benchmarks/dwi_phantoms.py
	$(BIN)/python benchmarks/ukat_dti_localisation.py
	$(BIN)/python benchmarks/super_resolution.py
	$(BIN)/python benchmarks/em_localised.py
	$(BIN)/python benchmarks/plan_memory.py --spacing 1.99
	$(BIN)/python benchmarks/ct_phantoms.py

clean:
	rm -rf $(VENV) demo_output
