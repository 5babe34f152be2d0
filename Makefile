# make demo: the main job end to end.  make test: every test, under python3 and Python 3.9.
PYTHON ?= python3
# macOS ships Python 3.9, so the suite must pass there too: use python3.9 when it runs,
# else a pyenv-installed 3.9 (the last match), else skip that half with a note.
PY39 := $(shell if python3.9 -c pass >/dev/null 2>&1; then echo python3.9; \
	elif command -v pyenv >/dev/null 2>&1; then ls $$(pyenv root)/versions/3.9*/bin/python3.9 2>/dev/null | tail -n 1; fi)

.PHONY: demo test test-py3 test-py39 bench clean

demo:
	$(PYTHON) -m kiri demo

# Both Pythons at once: each runs its modules in two workers (tests/run.py), and many
# tests wait on a subprocess, a server or a browser, so four processes keep two cores busy.
test:
	@$(MAKE) --no-print-directory -j2 test-py3 test-py39

test-py3:
	$(PYTHON) tests/run.py

test-py39:
ifeq ($(PY39),)
	@echo "python 3.9 not found; skipping the 3.9 run"
else
	$(PY39) tests/run.py
endif

# Benchmarks print their figures (month: the daemon through 30 simulated days, ~30 min; fuzz: ~10 min;
# fleet: 100 watched hosts, ~5 min);
# `nab` reads ../shared/nab (the shared NAB subset) when it is there.
NAB ?= ../shared/nab
bench:
	$(PYTHON) -m kiri bench speed
	$(PYTHON) -m kiri bench train
	$(PYTHON) -m kiri bench month
	$(PYTHON) -m kiri bench fuzz --cases 20000
	$(PYTHON) -m kiri bench fleet --hosts 100
	@if [ -d "$(NAB)/data" ]; then \
	  $(PYTHON) -m kiri bench nab --data $(NAB) --out /tmp/kiri-nab-results --jobs 2 && \
	  $(PYTHON) -m kiri bench nab-score --data $(NAB) --windows $(NAB)/dev_windows.json --results /tmp/kiri-nab-results; \
	else echo "no NAB data at $(NAB); skipping bench nab"; fi

clean:
	rm -rf build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
