"""Every command that benchmarks/RESULTS.md records still parses with its script's own options, so
a recorded result can be rerun as written (the scripts are only parsed here, nothing runs)."""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
COMMAND = re.compile(r"`(python benchmarks/(\w+)\.py\b[^`]*)`")


def recorded_commands() -> list[tuple[str, list[str]]]:
    """(script, argv) of each command in RESULTS.md; ``[--opt value]`` is read as given."""
    text = (BENCHMARKS / "RESULTS.md").read_text()
    commands = []
    for match in COMMAND.finditer(text):
        argv = [a.strip("[]") for a in shlex.split(" ".join(match.group(1).split()))[2:]]
        commands.append((match.group(2), argv))
    return commands


class Parsed(Exception):
    """Raised in place of running the script once its options are parsed."""


def parse_only(script: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    original = argparse.ArgumentParser.parse_args

    def stop(self: argparse.ArgumentParser, args: list[str] | None = None, namespace: object = None) -> None:
        raise Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop)
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmark_{script}", BENCHMARKS / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    with pytest.raises(Parsed) as parsed:
        (module.parse_args if hasattr(module, "parse_args") else module.main)(argv)
    return parsed.value.args[0]


def test_results_records_commands_of_the_ablation_and_pruning_scripts():
    scripts = {script for script, _ in recorded_commands()}
    assert {"prune_study", "quant_ablation", "seg_quant_ablation", "seg_agreement"} <= scripts


@pytest.mark.parametrize(("script", "argv"), recorded_commands(),
                         ids=[f"{s}-{i}" for i, (s, _) in enumerate(recorded_commands())])
def test_recorded_command_parses(script, argv, monkeypatch):
    assert isinstance(parse_only(script, argv, monkeypatch), argparse.Namespace)


def test_a_renamed_option_fails_to_parse(monkeypatch):
    script, argv = next((s, a) for s, a in recorded_commands() if s == "quant_ablation")
    with pytest.raises(SystemExit):
        parse_only(script, [("--calibration" if a == "--calib" else a) for a in argv], monkeypatch)
