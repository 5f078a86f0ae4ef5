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

# Every figure the README and docs/pipelines.md quote, with the settings they quote (about 8 h
# on 2 CPU cores, most of it training; each script writes benchmarks/results/).
MR_CV := runs/mr_t2
C2F_STAGES := coarse=600 correction=600 fine=3000 tumour3d=3000 tumour2d=2000

benchmark: install
	# README "Results": 5-fold CV and the final model of the shipped recipe, then the TTA and
	# threshold chosen by nested CV on the same folds, then other scanners and the QC flags
	$(BIN)/python benchmarks/mr_kidney.py --train $(MR_CV)
	$(BIN)/python benchmarks/mr_inference_settings.py --folds $(MR_CV)/fold_0 $(MR_CV)/fold_1 $(MR_CV)/fold_2 $(MR_CV)/fold_3 $(MR_CV)/fold_4 --threads 1
	$(BIN)/python benchmarks/mr_generalisation.py --model shipped=shipped --tag "mr_t2_kidney (default) with its QC settings"
	$(BIN)/python benchmarks/segment_speed.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/metrics_speed.py
	$(BIN)/python benchmarks/kidneyus_interobserver.py
	# docs/pipelines.md
	$(BIN)/python benchmarks/unsupervised.py
	$(BIN)/python benchmarks/registration.py
	$(BIN)/python benchmarks/kidneyus_reader.py
	$(BIN)/python benchmarks/us_phantoms.py
	$(BIN)/python benchmarks/us_ensemble_chaos.py
	$(BIN)/python benchmarks/dwi_phantoms.py
	$(BIN)/python benchmarks/ukat_dti_localisation.py
	$(BIN)/python benchmarks/super_resolution.py
	$(BIN)/python benchmarks/em_localised.py
	$(BIN)/python benchmarks/plan_memory.py --spacing 1.99
	# kits-unet3d on CT phantoms: 400 iterations, plan for 1.5 GB, filters from 8, one thread
	$(BIN)/python benchmarks/ct_phantoms.py --iterations 400 --memory-gb 1.5 --base-filters 8 --threads 1
	# c2f-cascade run 1 (600 iterations per network), run 2 (the same model folder resumed to the
	# longer fine and tumour training), then run 2's model on phantoms made afterwards (seeds 500-503, 600)
	$(BIN)/python benchmarks/ct_phantoms.py --pipeline c2f-cascade --iterations 600 --out benchmarks/results/c2f_phantoms_run1.md
	$(BIN)/python benchmarks/ct_phantoms.py --pipeline c2f-cascade --iterations 600 --stage-iterations $(C2F_STAGES)
	$(BIN)/python benchmarks/ct_phantoms.py --pipeline c2f-cascade --iterations 600 --stage-iterations $(C2F_STAGES) --test-seed 500 --out benchmarks/results/c2f_phantoms_fresh.md

clean:
	rm -rf $(VENV) demo_output
