# The two commands of the README. `setup` installs torch 2.14.1 + torchvision 0.29.1 first
# (open_clip needs torchvision; both lie on this machine's disk), then the project.
PYTHON ?= python3
OUT ?= runs/demo

.PHONY: setup demo test test-slow bench

setup:
	$(PYTHON) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PYTHON) -m pip install -q -e '.[dev]'

demo: setup
	reneg train --out $(OUT)/negative.safetensors
	reneg compare --negative $(OUT)/negative.safetensors --out $(OUT)/demo.png
	reneg generate --negative $(OUT)/negative.safetensors --prompt "a red circle on a blue background" \
		--prompt "a yellow star on a black background" --num-images 2 --out $(OUT)/images

test: setup
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q

test-slow: setup
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q -m slow

# The benchmark suite (benchmarks/suite.py): same-run ratios, medians of 5, markdown (command, machine, date,
# versions) appended to BENCH_OUT, BENCHMARKS.md by default. BENCH_ARGS e.g. --only floor,memory --rounds 7
BENCH_OUT ?= BENCHMARKS.md
bench:
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 $(PYTHON) -m benchmarks --out $(BENCH_OUT) $(BENCH_ARGS)
