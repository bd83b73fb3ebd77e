"""DDP: two CPU processes under torchrun (gloo) train a few steps with identical weights on both
ranks after every step, and only rank 0 writes files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Each rank works in its own directory and is given the relative run folder "run": whatever a
# rank writes lands under its own directory, so rank 1's directory must stay empty.
DDP_SCRIPT = textwrap.dedent("""
    import hashlib, json, os, sys
    import torch, torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from vitedge.data import build_dataset
    from vitedge.train import fit
    from vitedge.train.trainer import build_model
    from test_train import tiny_config, tiny_sets

    rank = int(os.environ["RANK"])
    os.chdir(os.path.join({root!r}, f"rank{{rank}}"))
    train, evaluation = tiny_sets(build_dataset("fashion-mnist", split="test"))
    torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
    model, data_config = build_model("efficientvit_b0", train.classes, 32)
    checked, worlds = [], set()

    def same_weights(info):
        digest = hashlib.sha256()
        for p in info.model.module.parameters():
            digest.update(p.detach().numpy().tobytes())
        digests = [None] * info.dist.world_size
        dist.all_gather_object(digests, digest.hexdigest())
        if len(set(digests)) != 1:
            raise SystemExit(f"ranks differ after step {{info.step}}: {{digests}}")
        checked.append(info.step)
        worlds.add(info.dist.world_size)

    result = fit(model, train, evaluation, tiny_config("run", epochs=1, **{{"ema.decay": None}}),
                 data_config=data_config, hooks=[same_weights], verbose=False)
    report = {{"rank": rank, "world": sorted(worlds), "steps": checked, "top1": result.metrics["top1"]}}
    # A file per rank, beside the rank folders: both ranks printing to one pipe can interleave.
    with open(os.path.join({root!r}, f"report{{rank}}.json"), "w") as f:
        json.dump(report, f)
""")


def test_two_process_ddp(fashion_test, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    for rank in (0, 1):
        (tmp_path / f"rank{rank}").mkdir()
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), root=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(script)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = [json.loads((tmp_path / f"report{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["rank"] for r in reports] == [0, 1] and all(r["world"] == [2] for r in reports)
    # 96 images, global batch 16: 6 steps, each checked on both ranks.
    assert reports[0]["steps"] == reports[1]["steps"] == [1, 2, 3, 4, 5, 6]
    assert reports[0]["top1"] == reports[1]["top1"]  # evaluation sums both shards on every rank
    assert sorted(p.name for p in (tmp_path / "rank0" / "run").iterdir()) == [
        "metrics.json", "model.safetensors", "train_state.safetensors"]
    assert list((tmp_path / "rank1").iterdir()) == []
    metrics = json.loads((tmp_path / "rank0" / "run" / "metrics.json").read_text())
    assert metrics["final"]["num_samples"] == 32  # both eval shards counted once
