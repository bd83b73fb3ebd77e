"""Recipes that chain the layers below into one job on files: prune a checkpoint and fine-tune it,
quantize a checkpoint and score its precision plan. The study and the CLI call these."""
