"""Mutation check: can the test suite catch the bugs it exists to catch?

Each mutant below is one deliberate, realistic fault — a dropped residual, HardSwish swapped for
ReLU, an off-by-one crop, a scale multiplied by 1.01 in the ONNX writer, a user error that exits
0 — written as an exact snippet of ``src/vitedge`` and its replacement, with the few tests that
should catch it. For each mutant the script copies ``src/``, ``tests/`` and ``pyproject.toml``
(as committed at ``HEAD``, or the working tree with ``--worktree``) into a fresh folder, applies
the fault there and runs the selected tests against the copy (``PYTHONPATH`` precedes the
editable install's ``.pth`` entry; checked). The source tree itself is never modified.

Every selection first runs on the unmutated copy and must pass, so a failure under a mutant means
the fault was caught, not that the test was already red. A snippet that no longer occurs exactly
once (code moved) is an error, never a silently skipped mutant.

Writes ``mutation.json`` and ``mutation.md`` to ``--out`` and prints the table; exits 1 if a
mutant survives (or a baseline test fails, or a snippet is stale).

Example::

    .venv/bin/python benchmarks/mutation_check.py                 # all mutants, ~10 min on 2 cores
    .venv/bin/python benchmarks/mutation_check.py --only cli-user-error-exit-0,pruning-keep-lowest
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # tests/conftest.py finds datasets at parents[2] / "shared/datasets"
COPIED = ("src", "tests", "pyproject.toml")
PYTEST = ("-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider")
TIMEOUT_S = 900
CAUGHT = ("caught", "caught at import")  # the latter is said so in the table


@dataclass(frozen=True)
class Mutant:
    """One deliberate fault: ``original`` (which must occur exactly once in ``file``, a path
    under ``src/vitedge``) becomes ``replacement``; ``tests`` are pytest node ids that must fail."""

    id: str
    area: str
    fault: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]


PARITY = "tests/test_models_parity.py::test_logits_match_timm"
FUSE = "tests/test_models_parity.py::test_fuse_bn_removes_every_batchnorm_and_keeps_logits"
PRUNING = "tests/test_pruning.py"
QUANT = "tests/test_quantization.py"
ARITH = "tests/test_runtime_arith.py"
DEPLOY = "tests/test_deploy_precisions.py"
ONNX_FP32 = "tests/test_deploy_onnx.py"
TRANSFORMS = "tests/test_transforms.py"
CLI = "tests/test_cli.py"
INT8_SIM = f"{DEPLOY}::test_int8_export_runs_on_integer_kernels_and_matches_the_simulation"

MUTANTS: tuple[Mutant, ...] = (
    # ---- models ---------------------------------------------------------------------------------
    Mutant("mit-residual-dropped", "models",
           "MIT ResidualBlock returns main(x) without the shortcut",
           "models/efficientvit_mit.py",
           "            return self.main(x) + x\n",
           "            return self.main(x)\n",
           (f"{PARITY}[efficientvit_b0]",)),
    Mutant("mit-hardswish-to-relu", "models",
           "B-series activation ReLU instead of HardSwish",
           "models/efficientvit_mit.py",
           "    act=nn.Hardswish,\n",
           "    act=nn.ReLU,\n",
           (f"{PARITY}[efficientvit_b0]",)),
    Mutant("litemla-k-kernel-dropped", "models",
           "LiteMLA: ReLU kernel applied to q only, k left raw",
           "models/efficientvit_mit.py",
           "self._attention(F.relu(q), F.relu(k), v)",
           "self._attention(F.relu(q), k, v)",
           (f"{PARITY}[efficientvit_b0]",)),
    Mutant("l-series-exact-gelu", "models",
           "L-series GELU without the tanh approximation (timm's is tanh)",
           "models/efficientvit_mit.py",
           'act=partial(nn.GELU, approximate="tanh"),',
           "act=nn.GELU,",
           (f"{PARITY}[efficientvit_l1]",)),
    Mutant("msra-attn-scale", "models",
           "M-family attention scale key_dim ** -0.25 instead of ** -0.5",
           "models/efficientvit_msra.py",
           "self.scale = key_dim ** -0.5",
           "self.scale = key_dim ** -0.25",
           (f"{PARITY}[efficientvit_m0]",)),
    Mutant("msra-attn-bias-dropped", "models",
           "M-family relative attention bias not added before softmax",
           "models/efficientvit_msra.py",
           "attn = (q.transpose(-2, -1) @ k + attn_bias[i]).softmax(dim=-1)",
           "attn = (q.transpose(-2, -1) @ k).softmax(dim=-1)",
           (f"{PARITY}[efficientvit_m0]",)),
    Mutant("msra-cascade-dropped", "models",
           "M-family cascade: head i ignores head i-1's output",
           "models/efficientvit_msra.py",
           "                feat = feat + feats_in[i]\n",
           "                feat = feats_in[i]\n",
           (f"{PARITY}[efficientvit_m0]",)),
    Mutant("msra-residual-dropped", "models",
           "M-family Residual returns m(x) without x",
           "models/efficientvit_msra.py",
           "        return x + self.m(x)\n",
           "        return self.m(x)\n",
           (f"{PARITY}[efficientvit_m0]",)),
    Mutant("fuse-bn-mean-sign", "models",
           "BN folding adds the running mean instead of subtracting it",
           "models/layers.py",
           "fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)",
           "fused.bias.copy_((bias + bn.running_mean) * scale + bn.bias)",
           (f"{FUSE}[efficientvit_b0]", f"{FUSE}[efficientvit_m0]")),
    Mutant("fuse-bn-linear-shift", "models",
           "BN1d→Linear folding drops the BN shift (weight @ shift)",
           "models/layers.py",
           "fused.bias.copy_(bias + linear.weight @ shift)",
           "fused.bias.copy_(bias)",
           (f"{FUSE}[efficientvit_m0]",)),
    # ---- pruning --------------------------------------------------------------------------------
    Mutant("pruning-keep-lowest", "pruning",
           "plan keeps the lowest-scoring units (argsort direction flipped)",
           "pruning/pruner.py",
           "top = torch.argsort(scores[g.name], descending=True, stable=True)[:counts[g.name]]",
           "top = torch.argsort(scores[g.name], descending=False, stable=True)[:counts[g.name]]",
           (f"{PRUNING}::test_l2_scores_are_the_frobenius_norm_over_coupled_weights_and_keep_the_largest",)),
    Mutant("pruning-unsorted-slices", "pruning",
           "state-dict slicing keeps unit order instead of sorted indices",
           "pruning/groups.py",
           "idx = idx.sort().values.to(out[s.name].device)",
           "idx = idx.to(out[s.name].device)",
           (f"{PRUNING}::test_pruning_equals_silencing_the_removed_units[efficientvit_b0-kinds2-]",
            f"{PRUNING}::test_pruning_equals_silencing_the_removed_units[efficientvit_m0-kinds8-]")),
    Mutant("pruning-bn-reestimate-ema", "pruning",
           "BN re-estimation keeps momentum 0.1 (EMA) instead of a cumulative average",
           "pruning/batchnorm.py",
           "        m.momentum = None  # cumulative average over all batches, not an EMA\n",
           "        m.momentum = 0.1\n",
           (f"{PRUNING}::test_batchnorm_reestimation_matches_the_batch_statistics_and_moves_no_weight",)),
    # ---- quantization ---------------------------------------------------------------------------
    Mutant("quant-signed-qmax-128", "quantization",
           "symmetric grid max 2^(b-1) instead of 2^(b-1) - 1",
           "quantization/quantizer.py",
           "else (1 << (self.bits - 1)) - 1",
           "else (1 << (self.bits - 1))",
           (f"{QUANT}::test_symmetric_range_is_exact_and_asymmetric_keeps_zero",
            f"{QUANT}::test_fake_quant_values_lie_on_the_grid_within_half_a_step")),
    Mutant("quant-unsigned-qmax-256", "quantization",
           "asymmetric grid max 2^b instead of 2^b - 1 (uint8 256)",
           "quantization/quantizer.py",
           "return (1 << self.bits) - 1 if not self.symmetric",
           "return (1 << self.bits) if not self.symmetric",
           (f"{QUANT}::test_symmetric_range_is_exact_and_asymmetric_keeps_zero",
            f"{QUANT}::test_fake_quant_values_lie_on_the_grid_within_half_a_step")),
    Mutant("quant-zero-point-sign", "quantization",
           "asymmetric zero point qmin + lo/s instead of qmin - lo/s",
           "quantization/quantizer.py",
           "zero_point = torch.round(spec.qmin - lo / scale)",
           "zero_point = torch.round(spec.qmin + lo / scale)",
           (f"{QUANT}::test_symmetric_range_is_exact_and_asymmetric_keeps_zero",)),
    Mutant("trio-migration-not-folded", "quantization",
           "Trio-ViT migration divides the input but never scales the filters",
           "quantization/qmodules.py",
           "        self.weight.mul_(per_out.view(-1, 1, 1, 1).to(self.weight))\n",
           "",
           (f"{QUANT}::test_trio_transforms_are_exact_before_rounding[efficientvit_b0]",)),
    Mutant("trio-shift-compensation-sign", "quantization",
           "Trio-ViT shift compensation subtracted instead of added back",
           "quantization/trio.py",
           "            return torch.bmm(w, z).reshape(1, -1, 1, 1)\n",
           "            return -torch.bmm(w, z).reshape(1, -1, 1, 1)\n",
           (f"{QUANT}::test_trio_transforms_are_exact_before_rounding[efficientvit_b0]",)),
    Mutant("quantize-linear-multiplies", "quantization",
           "QuantizeLinear emulation multiplies by 1/s (ORT divides)",
           "quantization/runtime_arith.py",
           "return torch.clamp(torch.round(x / scale) + z, qmin, qmax) - z",
           "return torch.clamp(torch.round(x * (1.0 / scale)) + z, qmin, qmax) - z",
           (f"{ARITH}::test_quantize_linear_divides_like_the_runtime",
            f"{ARITH}::test_quantized_model_reproduces_the_onnx_runtime_logits[efficientvit_b0-64-0.9]",
            f"{INT8_SIM}[efficientvit_b0]",
            f"{QUANT}::test_fake_quant_model_exports_to_onnx_as_qdq_pairs")),
    Mutant("qlinear-add-swapped-ratios", "quantization",
           "QLinearAdd emulation pairs a with b's scale ratio",
           "quantization/runtime_arith.py",
           "t = _fma32(a.to(f32), ra, _fma32(b.to(f32), rb, const))",
           "t = _fma32(a.to(f32), rb, _fma32(b.to(f32), ra, const))",
           (f"{ARITH}::test_qlinear_add_matches_the_runtime_kernel[0]",)),
    # ---- export ---------------------------------------------------------------------------------
    Mutant("int8-weight-scale-1.01", "export",
           "INT8 ONNX writer quantizes weights with the scale x 1.01",
           "deploy/onnx_export.py",
           "inv = (np.float32(1.0) / scale.astype(np.float32)).reshape(shape)",
           "inv = (np.float32(1.0) / (scale.astype(np.float32) * np.float32(1.01))).reshape(shape)",
           (f"{INT8_SIM}[efficientvit_b0]",)),
    Mutant("int8-short-grid-clip", "export",
           "export clips 4/7-bit weights at (qmax + 1)·s (one step too wide)",
           "quantization/quantizer.py",
           "x = torch.minimum(x, qmax * s)",
           "x = torch.minimum(x, (qmax + 1) * s)",
           (f"{DEPLOY}::test_weights_narrower_than_8_bits_export_and_run_on_integer_kernels[4]",)),
    Mutant("fp16-layernorm-in-half", "export",
           "FP16 export wraps GroupNorm, so the head's LayerNorm runs in fp16",
           "deploy/onnx_export.py",
           "                if isinstance(child, nn.LayerNorm):\n",
           "                if isinstance(child, nn.GroupNorm):\n",
           (f"{DEPLOY}::test_fp16_export_is_finite_and_close_to_fp32[efficientvit_b0]",)),
    Mutant("export-arch-preprocessing", "export",
           "ONNX metadata gets the architecture's preprocessing, not the checkpoint's",
           "deploy/onnx_export.py",
           'preprocessing = {**getattr(model, "data_config", {}), **(data_config or {})}',
           'preprocessing = {**getattr(model, "data_config", {})}',
           (f"{DEPLOY}::test_cli_export_writes_the_checkpoint_preprocessing",)),
    Mutant("export-class-names-dropped", "export",
           "ONNX metadata drops the class names",
           "deploy/onnx_export.py",
           '"vitedge.classes": list(classes) if classes is not None else None,',
           '"vitedge.classes": None,',
           (f"{ONNX_FP32}::test_export_leaves_the_model_untouched_and_records_metadata",)),
    Mutant("export-batch-fixed", "export",
           "ONNX export ignores dynamic_batch (batch fixed at 1)",
           "deploy/onnx_export.py",
           'dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None,',
           "dynamic_axes=None,",
           (f"{DEPLOY}::test_cli_batch_one_export_runs_any_batch_as_the_dynamic_one",)),
    # ---- preprocessing --------------------------------------------------------------------------
    Mutant("crop-offset-off-by-one", "preprocessing",
           "random crop offset drawn from [0, W - w - 1]: never the last position",
           "data/transforms.py",
           "return rng.randint(0, width - w), rng.randint(0, height - h), w, h",
           "return rng.randint(0, width - w - 1), rng.randint(0, height - h - 1), w, h",
           (f"{TRANSFORMS}::test_train_transform_crops_the_sampled_box",)),
    Mutant("crop-box-shifted", "preprocessing",
           "train crop box shifted one pixel right of the sampled box",
           "data/transforms.py",
           "box=(left, top, left + width, top + height))",
           "box=(left + 1, top, left + 1 + width, top + height))",
           (f"{TRANSFORMS}::test_train_transform_crops_the_sampled_box",)),
    Mutant("eval-resize-rounds", "preprocessing",
           "eval resize to round(size / crop_pct) instead of floor",
           "data/transforms.py",
           "resize_shorter(img, math.floor(self.size / self.crop_pct), self.interpolation)",
           "resize_shorter(img, round(self.size / self.crop_pct), self.interpolation)",
           (f"{TRANSFORMS}::test_eval_transform_matches_timm[32-0.9-bicubic]",
            f"{TRANSFORMS}::test_eval_transform_matches_timm[224-0.95-bicubic]")),
    Mutant("eval-center-crop-floor", "preprocessing",
           "centre crop offset floor((H - size) / 2) instead of round",
           "data/transforms.py",
           "top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))",
           "top, left = (height - size) // 2, (width - size) // 2",
           (f"{TRANSFORMS}::test_eval_transform_matches_timm",)),
    Mutant("normalize-order", "preprocessing",
           "normalize divides by std before subtracting the mean",
           "data/transforms.py",
           "return tensor.sub_(mean_t).div_(std_t)",
           "return tensor.div_(std_t).sub_(mean_t)",
           (f"{TRANSFORMS}::test_eval_transform_matches_timm[64-0.95-bicubic]",)),
    # ---- data -----------------------------------------------------------------------------------
    Mutant("camvid-ignore-off-by-one", "data",
           "CamVid maps label 10 (not 11, unlabelled) to ignore",
           "data/segmentation.py",
           "label_map={11: IGNORE_INDEX}",
           "label_map={10: IGNORE_INDEX}",
           ("tests/test_seg_data.py::test_camvid_pairs_and_ignore_mapping",)),
    Mutant("seg-flip-image-only", "data",
           "segmentation flip moves the image but not the mask",
           "data/segmentation.py",
           "x, y = x.flip(-1), y.flip(-1)",
           "x, y = x.flip(-1), y",
           ("tests/test_seg_data.py::test_train_transform_moves_image_and_mask_together",)),
    Mutant("cifar-rows-as-hwc", "data",
           "CIFAR python batches read as HWC rows (they are CHW planes)",
           "data/cifar.py",
           "data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)",
           "data.reshape(-1, 32, 32, 3)",
           ("tests/test_data.py::test_cifar_python_batches",)),
    # ---- cli ------------------------------------------------------------------------------------
    Mutant("cli-user-error-exit-0", "cli",
           "a VitedgeError prints its line but exits 0",
           "cli.py",
           "        _print_error(str(err))\n        sys.exit(EXIT_USER_ERROR)\n",
           "        _print_error(str(err))\n        sys.exit(0)\n",
           (f"{CLI}::test_unknown_model", f"{CLI}::test_missing_checkpoint_path")),
    Mutant("cli-standalone-usage-errors", "cli",
           "typer in standalone mode: usage errors print click's multi-line box",
           "cli.py",
           "code = app(prog_name=PROG, standalone_mode=False)",
           "code = app(prog_name=PROG, standalone_mode=True)",
           (f"{CLI}::test_usage_error_is_one_line_and_exit_2",)),
    Mutant("cli-bare-exits-0", "cli",
           "bare `vitedge` prints the help and exits 0",
           "cli.py",
           "        raise typer.Exit(EXIT_USER_ERROR)\n",
           "        raise typer.Exit(0)\n",
           (f"{CLI}::test_bare_vitedge_shows_the_help_and_fails",)),
    Mutant("cli-return-code-dropped", "cli",
           "main() ignores the exit code typer returns (Ctrl-C 130, bare vitedge 2)",
           "cli.py",
           "    if isinstance(code, int) and code:\n        sys.exit(code)\n",
           "",
           (f"{CLI}::test_ctrl_c_exits_130", f"{CLI}::test_bare_vitedge_shows_the_help_and_fails")),
)


# --------------------------------------------------------------------------------------------
# the copy


def extract_tree(dest: Path, worktree: bool) -> str:
    """``src/``, ``tests/`` and ``pyproject.toml`` into ``dest``: as committed at HEAD (default,
    reproducible while others edit the tree) or as they are on disk. Returns what was copied."""
    dest.mkdir(parents=True)
    if worktree:
        for name in COPIED:
            src = REPO / name
            if src.is_dir():
                shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                shutil.copy2(src, dest / name)
        return "worktree"
    commit = git("rev-parse", "HEAD")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit, *COPIED],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return commit


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def check_snippets(pristine: Path, mutants: tuple[Mutant, ...]) -> list[str]:
    """A problem per mutant whose original snippet does not occur exactly once (code moved)."""
    problems = []
    for m in mutants:
        path = pristine / "src/vitedge" / m.file
        count = path.read_text().count(m.original) if path.is_file() else -1
        if count != 1:
            where = "file missing" if count < 0 else f"{count} occurrences"
            problems.append(f"{m.id}: snippet in src/vitedge/{m.file} must occur exactly once ({where}): "
                            f"{m.original.strip()!r}")
    return problems


def fresh_copy(pristine: Path, workdir: Path, mutant: Mutant | None) -> None:
    if workdir.exists():
        shutil.rmtree(workdir)
    shutil.copytree(pristine, workdir, ignore=shutil.ignore_patterns("__pycache__"))
    if mutant is not None:
        path = workdir / "src/vitedge" / mutant.file
        text = path.read_text()
        assert text.count(mutant.original) == 1, mutant.id  # checked up front
        path.write_text(text.replace(mutant.original, mutant.replacement))


def child_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(workdir / "src"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONDONTWRITEBYTECODE="1", COLUMNS="400")  # wide: FAILED lines keep their message
    return env


def imported_from(workdir: Path, full_import: bool) -> Path:
    """Where ``vitedge`` resolves under the child environment (``full_import``: actually import
    it, else only locate it — the spec's origin, without running torch's import)."""
    code = ("import vitedge; print(vitedge.__file__)" if full_import else
            "import importlib.util; print(importlib.util.find_spec('vitedge').origin)")
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=child_env(workdir),
                         capture_output=True, text=True, check=True).stdout
    return Path(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# running pytest


@dataclass
class Outcome:
    rc: int
    seconds: float
    failed: list[str]     # node ids from the FAILED lines
    errors: list[str]     # ERROR lines (collection / fixture errors)
    reasons: list[str]    # the message after " - " of each FAILED / ERROR line
    tail: str


_SUMMARY = re.compile(r"^(FAILED|ERROR) (.+?)(?: - (.*))?$")  # node ids may hold spaces


def run_pytest(workdir: Path, tests: tuple[str, ...], stop_first: bool) -> Outcome:
    args = [sys.executable, *PYTEST, *(["-x"] if stop_first else []), *tests]
    start = time.perf_counter()
    try:
        proc = subprocess.run(args, cwd=workdir, env=child_env(workdir), capture_output=True, text=True,
                              timeout=TIMEOUT_S)
        rc, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        rc, output = -1, f"timed out after {TIMEOUT_S} s\n{err.stdout or ''}"
    seconds = time.perf_counter() - start
    failed, errors, reasons = [], [], []
    for line in output.splitlines():
        match = _SUMMARY.match(line.strip())
        if match:
            (failed if match[1] == "FAILED" else errors).append(match[2])
            reasons.append((match[3] or "").strip())
    return Outcome(rc, seconds, failed, errors, reasons, "\n".join(output.splitlines()[-25:]))


def verdict(outcome: Outcome) -> tuple[str, str]:
    """(status, caught by): ``caught`` on a failing test, ``caught at import`` on a collection
    error only, ``timeout``, or ``survived``."""
    if outcome.rc == 0:
        return "survived", "—"
    if outcome.rc == -1:
        return "timeout", f"timed out after {TIMEOUT_S} s"
    if outcome.failed:
        return "caught", outcome.failed[0]
    if outcome.errors:
        return "caught at import", outcome.errors[0]
    return "error", f"pytest exit {outcome.rc} without a FAILED line"


# --------------------------------------------------------------------------------------------
# output


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    get = lambda key: fields.get(key, "?").strip()  # noqa: E731
    return f"{get('Model name')} (family {get('CPU family')}, model {get('Model')}), {get('CPU(s)')} CPUs"


def render_table(rows: list[dict]):
    from vitedge.report.tables import Table

    body = [[r["id"], r["area"], r["fault"], f"`{_short(r['caught_by'])}`" if r["status"] == "caught"
             else f"{r['status'].upper()}: {_short(r['caught_by'])}", f"{r['seconds']:.1f}"] for r in rows]
    return Table("Mutants", ["id", "area", "fault", "caught by", "seconds"], body)


def _short(node: str) -> str:
    return node.removeprefix("tests/")


def write_outputs(out: Path, report: dict) -> str:
    from vitedge.io import atomic_write
    from vitedge.report.document import Document

    doc = Document("Mutation check")
    doc.pairs({"command": report["command"], "source": report["source"], "date": report["date"],
               "cpu": report["cpu"], "total": f"{report['seconds']:.0f} s",
               "result": f"{report['caught']} of {report['total']} mutants caught"})
    doc.table(render_table(report["mutants"]))
    markdown = doc.markdown(out)

    def text_writer(text: str):
        return lambda tmp: Path(tmp).write_text(text)

    atomic_write(out / "mutation.json", text_writer(json.dumps(report, indent=2) + "\n"))
    atomic_write(out / "mutation.md", text_writer(markdown))
    return markdown


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", help="comma-separated mutant ids")
    p.add_argument("--out", type=Path, default=Path("runs/mutation"))
    p.add_argument("--worktree", action="store_true",
                   help="copy the working tree as it is on disk instead of HEAD")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = p.parse_args(argv)

    mutants = MUTANTS
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        known = {m.id for m in MUTANTS}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            p.error(f"unknown mutant id(s) {unknown}; see --list")
        mutants = tuple(m for m in MUTANTS if m.id in wanted)
    if args.list:
        for m in mutants:
            print(f"{m.id:32} {m.area:14} {m.fault}")
        return 0
    assert len({m.id for m in MUTANTS}) == len(MUTANTS), "mutant ids must be unique"

    start = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="vitedge-mutation-"))
    try:
        (base / "shared").symlink_to(SHARED)
        pristine, workdir = base / "pristine", base / "main"
        source = extract_tree(pristine, args.worktree)
        problems = check_snippets(pristine, mutants)
        if problems:
            print("stale mutants (the code moved; update the snippets):", *problems, sep="\n  ",
                  file=sys.stderr)
            return 1

        # The unmutated copy: vitedge must be imported from it, and every selection must pass.
        fresh_copy(pristine, workdir, None)
        origin = imported_from(workdir, full_import=True)
        if not origin.is_relative_to(workdir / "src"):
            print(f"vitedge imports from {origin}, not the copy in {workdir}/src", file=sys.stderr)
            return 1
        selection = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
        print(f"baseline: {len(selection)} selections on the unmutated copy ({source[:12]}) ...", flush=True)
        baseline = run_pytest(workdir, selection, stop_first=False)
        print(f"baseline: exit {baseline.rc} in {baseline.seconds:.0f} s", flush=True)
        if baseline.rc != 0:
            print("the unmutated copy fails these selections; a catch would mean nothing:",
                  *(baseline.failed + baseline.errors), baseline.tail, sep="\n  ", file=sys.stderr)
            return 1

        rows = []
        for i, m in enumerate(mutants, 1):
            fresh_copy(pristine, workdir, m)
            origin = imported_from(workdir, full_import=False)
            assert origin.is_relative_to(workdir / "src"), origin
            outcome = run_pytest(workdir, m.tests, stop_first=True)
            status, caught_by = verdict(outcome)
            rows.append({**asdict(m), "status": status, "caught_by": caught_by,
                         "reason": outcome.reasons[0] if outcome.reasons else "",
                         "seconds": round(outcome.seconds, 1), "rc": outcome.rc,
                         "tail": outcome.tail if status != "caught" else ""})
            print(f"[{i}/{len(mutants)}] {m.id}: {status}, {caught_by} ({outcome.seconds:.0f} s)", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    caught = sum(r["status"] in CAUGHT for r in rows)
    report = {
        "command": " ".join(["python", "benchmarks/mutation_check.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        "source": source if args.worktree else f"HEAD {source}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "baseline": {"tests": list(selection), "seconds": round(baseline.seconds, 1)},
        "seconds": round(time.perf_counter() - start, 1),
        "total": len(rows),
        "caught": caught,
        "mutants": rows,
    }
    print(write_outputs(args.out, report))
    survivors = [r["id"] for r in rows if r["status"] not in CAUGHT]
    if survivors:
        print(f"not caught: {', '.join(survivors)}", file=sys.stderr)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
