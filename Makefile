# The two commands of the README: `make demo` and `make test`. Both set up whatever is missing.
.PHONY: setup demo test lock
VENV := .venv

setup:
	@bash scripts/setup.sh

# The main job: the quick study on Fashion-MNIST (report in runs/quick/report.md).
demo: setup
	$(VENV)/bin/vitedge study --preset quick

# One worker per core (pytest-xdist), a test file per worker so module fixtures are built once.
test: setup
	$(VENV)/bin/python -m pytest -q -n auto --dist loadfile

# After a deliberate upgrade in .venv: write its exact versions to constraints.txt (the lock setup
# installs from and tests/test_install.py checks), keeping the file's header.
lock:
	@{ grep '^#' constraints.txt; $(VENV)/bin/pip freeze --exclude-editable; } > constraints.txt.new
	@mv constraints.txt.new constraints.txt
