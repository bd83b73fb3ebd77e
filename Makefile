# The two commands of the README: `make demo` and `make test`. Both set up whatever is missing.
.PHONY: setup demo test
VENV := .venv

setup:
	@bash scripts/setup.sh

# The main job: the quick study on Fashion-MNIST (report in runs/quick/report.md).
demo: setup
	$(VENV)/bin/vitedge study --preset quick

# One worker per core (pytest-xdist), a test file per worker so module fixtures are built once.
test: setup
	$(VENV)/bin/python -m pytest -q -n auto --dist loadfile
