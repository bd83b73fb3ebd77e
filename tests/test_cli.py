"""The CLI: one-line errors with a non-zero exit for every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vitedge
from vitedge import cli
from vitedge.models.checkpoint import save


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["vitedge", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unknown_model(monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "profile", "efficientvit_b9", "--no-latency")
    assert_one_line_error(code, err, "unknown model", "efficientvit_b")


def test_corrupt_checkpoint(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    code, _, err = run_cli(monkeypatch, capsys, "profile", str(bad), "--no-latency")
    assert_one_line_error(code, err, "truncated")


def test_wrong_checkpoint_for_the_model(monkeypatch, capsys, tmp_path):
    torch.save(vitedge.create_model("efficientvit_b1").state_dict(), tmp_path / "b1.pth")
    out = tmp_path / "b0.safetensors"
    code, _, err = run_cli(monkeypatch, capsys, "convert", str(tmp_path / "b1.pth"),
                           "--model", "efficientvit_b0", "-o", str(out))
    assert_one_line_error(code, err, "does not fit efficientvit_b0")
    assert not out.exists()


def test_wrong_num_classes(monkeypatch, capsys, tmp_path):
    path = save(vitedge.create_model("efficientvit_m0", num_classes=10), tmp_path / "m0.safetensors")
    code, _, err = run_cli(monkeypatch, capsys, "profile", str(path), "--num-classes", "100",
                           "--no-latency")
    assert_one_line_error(code, err, "num_classes")


def test_missing_checkpoint_path(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "profile", str(tmp_path / "x.safetensors"), "--no-latency")
    assert_one_line_error(code, err, "does not exist")


def test_profile_writes_json(monkeypatch, capsys, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "profile", "efficientvit_m0", "--runs", "2",
                           "--json", str(tmp_path / "p.json"))
    assert code == 0
    (row,) = json.loads((tmp_path / "p.json").read_text())
    assert row["params"] > 2e6 and row["latency"]["median_ms"] > 0
    assert "efficientvit_m0" in out


def test_convert_then_info(monkeypatch, capsys, tmp_path):
    torch.save({"state_dict": vitedge.create_model("efficientvit_b0", num_classes=3).state_dict()},
               tmp_path / "timm.pth")
    out = tmp_path / "b0.safetensors"
    code, _, _ = run_cli(monkeypatch, capsys, "convert", str(tmp_path / "timm.pth"),
                         "--model", "efficientvit_b0", "-o", str(out))
    assert code == 0
    code, out_text, _ = run_cli(monkeypatch, capsys, "info", str(out))
    assert code == 0 and '"num_classes": 3' in out_text


# Usage errors (bad command line, caught by the parser before any command runs) are user errors
# too: one line that names the problem and where to read more, exit 2 like every user error.
USAGE_ERRORS = [
    (("profile", "--bogus"), ("--bogus", "see vitedge profile --help")),
    (("prune",), ("Missing argument", "checkpoint", "see vitedge prune --help")),
    (("prune", "model.safetensors", "--ratio", "abc"), ("'--ratio'", "number", "see vitedge prune --help")),
    (("profile", "--resolution"), ("'--resolution' requires an argument", "see vitedge profile --help")),
    (("profil",), ("No such command 'profil'", "Did you mean 'profile'", "see vitedge --help")),
]


@pytest.mark.parametrize(("args", "fragments"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_error_is_one_line_and_exit_2(monkeypatch, capsys, args, fragments):
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == cli.EXIT_USER_ERROR == 2
    assert_one_line_error(code, err, "error:", *fragments)
    assert "Traceback" not in err and out == ""


def test_bare_vitedge_shows_the_help_and_fails(monkeypatch, capsys):
    """No command is a usage error (a script that forgot its verb must not pass), but the user
    typing the bare name wants the list of commands: print the help, exit 2."""
    code, out, err = run_cli(monkeypatch, capsys)
    assert code == 2
    assert "Usage: vitedge" in out and "prune" in out and "bench" in out
    assert "Traceback" not in err and "Error" not in err


@pytest.mark.parametrize("args", [("--help",), ("prune", "--help")], ids=" ".join)
def test_help_exits_0(monkeypatch, capsys, args):
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert f"Usage: vitedge {args[0] if len(args) > 1 else ''}".rstrip() in out
    assert err == ""


def test_console_script_usage_error(tmp_path):
    """The installed ``vitedge`` script itself (not ``main()`` called in-process)."""
    script = Path(sys.executable).with_name("vitedge")
    assert script.is_file(), f"{script} is missing: install the package (pip install -e .)"
    proc = subprocess.run([str(script), "profile", "--bogus"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc.returncode, proc.stderr, "--bogus", "see vitedge profile --help")


def test_ctrl_c_exits_130(monkeypatch, capsys):
    """An interrupted command must not look successful to the shell (typer turns the interrupt
    into an exit code that a non-standalone caller has to pass on)."""
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("vitedge.models.list_models", interrupted)
    code, _, _ = run_cli(monkeypatch, capsys, "models")
    assert code == 130


def _commands() -> dict[str, object]:
    """Every registered command, as the parser sees it (name → click command)."""
    import typer.main

    return typer.main.get_command(cli.app).commands


def _required(command) -> list[str]:
    return [param.name for param in command.params if param.required]


COMMANDS = sorted(_commands())
WITH_REQUIRED = [name for name in COMMANDS if _required(_commands()[name])]


def assert_one_line_usage_error(code: int, out: str, err: str) -> None:
    assert code == 2, (out, err)
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 1, out + err
    assert lines[0].startswith("error:") and "Traceback" not in err


def test_every_command_is_covered():
    assert {"train", "eval", "prune", "quantize", "export", "bench", "profile", "hw", "study"} <= set(COMMANDS)
    assert {"eval", "prune", "quantize", "export", "bench", "hw", "convert", "info", "predict"} <= set(WITH_REQUIRED)


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_option_is_one_line_and_exit_2(monkeypatch, capsys, command):
    code, out, err = run_cli(monkeypatch, capsys, command, "--bogus")
    assert_one_line_usage_error(code, out, err)
    assert "--bogus" in err and f"see vitedge {command} --help" in err


@pytest.mark.parametrize("command", WITH_REQUIRED)
def test_missing_required_argument_is_one_line_and_exit_2(monkeypatch, capsys, command):
    code, out, err = run_cli(monkeypatch, capsys, command)
    assert_one_line_usage_error(code, out, err)
    assert "Missing" in err and f"see vitedge {command} --help" in err


SIDE_LENGTH_COMMANDS = ["export", "hw", "profile", "prune", "train"]  # older than the one name: alias kept
NEWER_SIDE_LENGTH_COMMANDS = ["search"]


@pytest.mark.parametrize("command", SIDE_LENGTH_COMMANDS)
def test_one_name_for_the_input_side_length(command):
    """``--img-size`` everywhere, ``--resolution`` a hidden alias of it (older command lines run)."""
    options = {opt: param for param in _commands()[command].params for opt in param.opts}
    assert not options["--img-size"].hidden and options["--resolution"].hidden
    assert {command for command, c in _commands().items()
            if any("--img-size" in p.opts for p in c.params)} == {*SIDE_LENGTH_COMMANDS,
                                                                   *NEWER_SIDE_LENGTH_COMMANDS}


@pytest.mark.parametrize("flag", ["--img-size", "--resolution"])
def test_side_length_alias_reaches_the_model(monkeypatch, capsys, tmp_path, flag):
    code, _, err = run_cli(monkeypatch, capsys, "hw", "efficientvit_b0", flag, "64",
                             "--json", str(tmp_path / "hw.json"))
    assert code == 0, err
    assert json.loads((tmp_path / "hw.json").read_text())["summary"]["resolution"] == [64, 64]


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "vitedge.cli", "models", "b0"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "efficientvit_b0" in proc.stdout.split()
