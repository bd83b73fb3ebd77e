"""The ``vitedge`` command: a thin layer over the Python API.

Every user mistake surfaces as a :class:`VitedgeError`, printed as one line on stderr with a
non-zero exit; nothing else is caught, so real bugs keep their traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.table import Table

from vitedge.errors import VitedgeError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compress EfficientViT models and deploy them on edge devices.")
console = Console()
EXIT_USER_ERROR = 2


@app.command("models")
def models_command(pattern: Annotated[str, typer.Argument(help="substring filter")] = "") -> None:
    """List the registered model names."""
    from vitedge.models import list_models

    for name in list_models(pattern):
        console.print(name)


@app.command("profile")
def profile_command(
    model: Annotated[Optional[str], typer.Argument(help="model name or checkpoint path")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="profile every registered model")] = False,
    resolution: Annotated[Optional[int], typer.Option(help="input resolution (default: the model's)")] = None,
    num_classes: Annotated[Optional[int], typer.Option(help="classifier width for a model name")] = None,
    latency: Annotated[bool, typer.Option(help="also time PyTorch eager at batch 1")] = True,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for latency")] = None,
    runs: Annotated[int, typer.Option(help="timed runs for latency")] = 10,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write results as JSON here")] = None,
) -> None:
    """Params, MACs, weight and activation memory (and PyTorch latency) of models."""
    from vitedge.bench import profile, torch_latency
    from vitedge.bench.published import PUBLISHED_COST
    from vitedge.models import list_models

    if all_models == (model is not None):
        raise VitedgeError("give either a MODEL (name or checkpoint) or --all")
    if resolution is not None and resolution <= 0:
        raise VitedgeError(f"--resolution must be positive (got {resolution})")
    names = list_models() if all_models else [model]
    table = Table(title="vitedge profile")
    for column in ("model", "res", "params (M)", "published", "MACs (M)", "published",
                   "weights (MB)", "activations (MB)", "torch ms (b1)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    results = []
    for name in names:
        net = resolve_model(name, num_classes=num_classes)
        stats = profile(net, resolution=resolution)
        if latency:
            stats["latency"] = torch_latency(net, resolution=resolution, threads=threads,
                                             warmup=2, runs=runs).to_dict()
        arch_name = net.arch["name"]
        stats["model"] = name
        results.append(stats)
        ref_params, ref_macs = PUBLISHED_COST.get(arch_name, (None, None))
        default_res = stats["input_size"][1] == net.data_config["input_size"][1]
        table.add_row(
            name, str(stats["input_size"][1]), f"{stats['params'] / 1e6:.2f}",
            f"{ref_params:.2f}" if ref_params and default_res else "",
            f"{stats['macs'] / 1e6:.1f}", f"{ref_macs:.0f}" if ref_macs and default_res else "",
            f"{stats['weight_bytes'] / 2**20:.1f}", f"{stats['activation_bytes'] / 2**20:.1f}",
            f"{stats['latency']['median_ms']:.1f}" if latency else "",
        )
        del net
    console.print(table)
    if json_out is not None:
        from vitedge.models.checkpoint import atomic_write

        text = json.dumps(results, indent=2)
        atomic_write(json_out, lambda tmp: Path(tmp).write_text(text))
        console.print(f"wrote {json_out}")


@app.command("convert")
def convert_command(
    checkpoint: Annotated[Path, typer.Argument(help="timm or official .pth/.bin/.safetensors file")],
    model: Annotated[str, typer.Option(help="architecture the checkpoint holds, e.g. efficientvit_b0")],
    output: Annotated[Path, typer.Option("--output", "-o", help="vitedge .safetensors to write")],
) -> None:
    """Turn a timm or official checkpoint into a self-describing vitedge checkpoint."""
    from vitedge.models.checkpoint import load, save

    if output.suffix != ".safetensors":
        raise VitedgeError(f"--output must end in .safetensors (got {output.name})")
    net = load(checkpoint, model)
    save(net, output)
    console.print(f"wrote {output} ({net.arch['name']}, {net.num_classes} classes)")


@app.command("info")
def info_command(checkpoint: Annotated[Path, typer.Argument(help="vitedge .safetensors checkpoint")]) -> None:
    """Show the model config and extra information stored in a vitedge checkpoint."""
    from vitedge.models.checkpoint import read_metadata

    console.print_json(json.dumps(read_metadata(checkpoint)))


def resolve_model(spec: str, num_classes: int | None = None):
    """A model from a registered name or a checkpoint path (the CLI's MODEL argument)."""
    from vitedge.models import create_model, is_model
    from vitedge.models.checkpoint import load
    from vitedge.models.registry import unknown_model_error

    if is_model(spec):
        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        return create_model(spec, **kwargs).eval()
    if Path(spec).is_file():
        return load(spec, num_classes=num_classes)
    if any(sep in spec for sep in ("/", ".")):
        raise VitedgeError(f"checkpoint {spec} does not exist; check the path")
    raise unknown_model_error(spec)


def main() -> None:
    """Console-script entry point: one-line errors and a non-zero exit for user mistakes."""
    try:
        app(standalone_mode=False)
    except VitedgeError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
