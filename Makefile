# The two commands of the README: `make demo` and `make test`. Both set up whatever is missing.
.PHONY: setup demo test
VENV := .venv

setup:
	@bash scripts/setup.sh

# Until the one-command study exists, the demo profiles every model of the zoo.
demo: setup
	$(VENV)/bin/vitedge profile --all --json runs/demo/profile.json

test: setup
	$(VENV)/bin/python -m pytest -q
