# transferscope: `make demo` runs the default study, `make test` runs lint and the tests.
# Both create the virtual environment on first use; nothing else needs installing by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STUDY ?= transferscope-study
FASHION_DEB := /usr/share/datasets/fashion-mnist

.PHONY: demo test lint bench data venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Re-install when the package metadata changes; the stamp records what was installed.
$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) install --quiet $(TORCH_PINS)
	$(PIP) install --quiet -e '.[dev,timm,ray]' $(TORCH_PINS)
	touch $@

venv: $(VENV)/.installed-dev

# Fashion-MNIST: TRANSFERSCOPE_DATA, then Debian's package (installed here when we are root),
# then torchvision's downloader at run time when online.
data:
	@if [ -n "$$TRANSFERSCOPE_DATA" ] || [ -d $(FASHION_DEB) ]; then \
	  echo "Fashion-MNIST: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
	  && echo "Fashion-MNIST: installed Debian's dataset-fashion-mnist"; \
	else \
	  echo "Fashion-MNIST: not installed; run 'sudo apt-get install dataset-fashion-mnist' or set TRANSFERSCOPE_DATA to a folder with its IDX files"; \
	fi

demo: venv data
	$(VENV)/bin/transferscope run --out $(STUDY)

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

test: lint
	$(PY) -m pytest -q

bench: venv
	$(PY) -m bench

clean:
	rm -rf $(STUDY) .pytest_cache .ruff_cache
