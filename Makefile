# The two set-up commands are `make demo` and `make test`; each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-sqlite test-postgres lint bench spu ipp clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m compileall -q src > /dev/null
	$(BIN)/python -m dataspace demo --size default

# Byte-compile first: the suite starts hundreds of Python processes (node servers, CLI runs),
# and where PYTHONDONTWRITEBYTECODE is set each would compile every module again (~0.6 s).
# Scratch files go to tmpfs when the machine has one: every SQLite commit is fsynced
# (synchronous=FULL), which costs a disk flush on a real disk and nothing on tmpfs.
# (only with 2 GB free: a container's default /dev/shm is 64 MB, and the suite's scratch
# peaked at 0.5 GB in a full run)
TEST_TMP := $(shell test -w /dev/shm && df -Pk /dev/shm | awk 'NR==2 && $$4 > 2097152 {print "/dev/shm"}')
test: $(STAMP)
	$(BIN)/python -m compileall -q src > /dev/null
	$(if $(TEST_TMP),TMPDIR=$$(mktemp -d -p $(TEST_TMP) dataspace-test.XXXXXX) && trap 'rm -rf "$$TMPDIR"' EXIT && export TMPDIR &&) \
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

# Optional RR22 PSI engine: spu's compiled PSI modules, without its compiler front end
# (spu declares numpy<2 and jax for that; the PSI modules need neither).
spu: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps 'spu==0.9.5'

# Optional multi-buffer X25519 for DH-PSI (the `ipp` extra; used only on CPUs with AVX-512 IFMA).
ipp: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[ipp]'

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/ledger.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
