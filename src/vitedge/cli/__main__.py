"""``python -m vitedge.cli`` (and ``torchrun -m vitedge.cli train``)."""

from vitedge.cli import main

main()
