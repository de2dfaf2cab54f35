# Two entry points do all the set-up on a fresh machine (see README):
#   make run   - the headline job: bench run --method dear --suite beir (offline default)
#   make test  - the test suite (CPU only, offline)
VENV ?= .venv
BENCH := $(VENV)/bin/bench
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: setup run test lint leaderboard

setup:
	VENV=$(VENV) bash scripts/setup.sh

# Fresh results go to runs/ (git-ignored), so the committed ones under leaderboards/results
# are never overwritten; compare the two tables, or pass OUT=leaderboards/results to update.
OUT ?= runs/results

run: setup
	$(BENCH) assets prepare
	$(BENCH) run --method dear --suite beir --out $(OUT)
	$(BENCH) leaderboard --results $(OUT) --out $(dir $(OUT))leaderboards

test: setup
	$(PY) -m pytest -q -ra

lint: setup
	$(VENV)/bin/ruff check bench methods tests benchmarks

leaderboard: setup
	$(BENCH) leaderboard
