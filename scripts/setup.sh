#!/usr/bin/env bash
# Idempotent setup: the Debian Fashion-MNIST package, a .venv with pinned torch, vitedge and its
# test tools. A second run with nothing changed returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  echo "setup: installing the Debian package dataset-fashion-mnist (the embedded default dataset)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if ! { $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
         || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist; }; }; then
    echo "setup: could not install dataset-fashion-mnist with apt-get; install it by hand" >&2
    exit 1
  fi
fi

PYTHON=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi

# pip's log goes to a file; on failure it is shown, minus this machine's find-links noise.
pip_quiet() {
  if ! .venv/bin/python -m pip "$@" > .venv/pip.log 2>&1; then
    grep -v '^WARNING: Location' .venv/pip.log >&2
    echo "setup: pip $* failed (log above)" >&2
    exit 1
  fi
}

# Reinstall only when the project's requirements changed since the last successful setup.
stamp=.venv/.vitedge-setup
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing torch 2.14.1 + torchvision 0.29.1 and vitedge[test] into .venv"
  pip_quiet install --upgrade pip
  pip_quiet install -c constraints.txt torch==2.14.1 torchvision==0.29.1
  pip_quiet install -c constraints.txt -e ".[test]"
  .venv/bin/python -c "import torch, vitedge; assert torch.__version__.startswith('2.14.1'), torch.__version__"
  echo "$want" > "$stamp"
fi
