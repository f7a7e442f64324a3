# transferscope: `make demo` runs the default study, `make test` runs lint and the tests.
# Both create the virtual environment on first use; nothing else needs installing by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STUDY ?= transferscope-study
FASHION_DEB := /usr/share/datasets/fashion-mnist
# OpenMP threads with nothing to do sleep instead of spinning: on a machine that also runs other
# work a spinning thread takes the core its partner needs (measured on a busy 2-core machine:
# a 2-thread forward pass of the mini model 5-10x slower than with one thread; sleeping, faster).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test lint bench data test-packages venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Re-install when the package metadata changes; the stamp records what was installed.
$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) install --quiet $(TORCH_PINS)
	$(PIP) install --quiet -e '.[dev,timm,ray]' $(TORCH_PINS)
	touch $@

venv: $(VENV)/.installed-dev

# System packages, installed here when we are root and have apt-get (as in CI), otherwise one
# line each says the command to run and what goes without it. Nothing is downloaded at test time.
#   dataset-fashion-mnist  the source data of the mini/micro studies (TRANSFERSCOPE_DATA: a
#                          folder with its four IDX files does as well)
#   chromium               the headless browser of the report's test
# The test modules with tests that need Fashion-MNIST (tests/test_makefile.py keeps this current).
FASHION_TESTS := test_analysis_domain.py test_architectures.py test_data_memory.py test_faults.py test_gpu_paths.py test_negative_control.py \
  test_plan.py test_ray_executor.py test_study.py test_train_run.py
define have_fashion
  { [ -n "$$TRANSFERSCOPE_DATA" ] || [ -d $(FASHION_DEB) ]; }
endef
define have_chromium
  { command -v chromium >/dev/null; }
endef
# $(call apt_install,PACKAGES): one apt-get run for the packages, when we can.
define apt_install
  if [ -n "$(strip $(1))" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
    echo "installing Debian packages:$(1)"; \
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1)) \
      >/dev/null || echo "apt-get could not install:$(1)"; \
  fi
endef

# For the demo: Fashion-MNIST (without it the run falls back to torchvision's downloader).
data:
	@$(have_fashion) || { $(call apt_install, dataset-fashion-mnist); }; \
	if $(have_fashion); then echo "Fashion-MNIST: found"; else \
	  echo "Fashion-MNIST: not installed; run 'sudo apt-get install dataset-fashion-mnist' or set TRANSFERSCOPE_DATA to a folder with its IDX files"; \
	fi

# For the tests: Fashion-MNIST and Chromium; whatever is missing skips the tests that need it.
test-packages:
	@need=""; $(have_fashion) || need="dataset-fashion-mnist"; \
	$(have_chromium) || need="$$need chromium"; \
	$(call apt_install,$$need); \
	$(have_fashion) || echo "Fashion-MNIST: not installed, so the tests that need it are skipped (in tests/ $(FASHION_TESTS)); run 'sudo apt-get install dataset-fashion-mnist' or set TRANSFERSCOPE_DATA to a folder with its IDX files"; \
	$(have_chromium) || echo "chromium: not installed, so tests/test_report_browser.py is skipped; run 'sudo apt-get install chromium'"

demo: venv data
	$(VENV)/bin/transferscope run --out $(STUDY)

# ruff for style, import-linter for the layers (pyproject.toml), mypy for the types.
lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# Two test processes, one per core of the 2-core machines CI runs on (TEST_WORKERS=auto uses every
# core; TEST_WORKERS=0 runs in this process); --dist loadfile keeps each test module, and the study
# its module-scoped fixture trains, in one process; --no-loadscope-reorder keeps the order
# tests/conftest.py gives the modules (the longest first, from tests/module_seconds.json).
# --doctest-modules runs the examples in the docstrings of the measures (src/transferscope/measures)
# and of the metrics the trainer and the measures share (training/metrics.py).
TEST_WORKERS ?= 2
test: lint test-packages
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
	  --doctest-modules tests src/transferscope/measures src/transferscope/training/metrics.py

bench: venv
	$(PY) -m bench

clean:
	rm -rf $(STUDY) .pytest_cache .ruff_cache
