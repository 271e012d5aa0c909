# The two commands of the README. Both set up everything they need on a fresh Debian machine.
.PHONY: setup build test lint bench

export HF_HUB_OFFLINE := 1
VENV := .venv/bin

setup:
	bash scripts/setup.sh

build: setup
	$(VENV)/edgekd build --target esp32s3

test: setup
	$(VENV)/ruff check edgekd tests bench
	$(VENV)/python -m pytest -q

bench: setup
	$(VENV)/python bench/bench_build.py --target esp32s3
