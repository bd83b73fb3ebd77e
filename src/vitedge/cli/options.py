"""The options the commands share, each defined once as an ``Annotated`` type: a command declares
``data_dir: DataDir = None`` and gets the same name, type and help as every other command.

``--img-size`` is the input side length everywhere (the config key is ``data.img_size``);
``--resolution`` is its hidden alias, so older command lines still run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vitedge.errors import VitedgeError
from vitedge.train.config import TrainConfig

DEFAULTS = TrainConfig()  # the options' defaults are the config's own
# Hidden alias → the option it stands for.
ALIASES = {"resolution": "img_size"}


def non_negative(param: typer.CallbackParam, value: int | None) -> int | None:
    """An option's callback: a count, 0 or more (the error names the option, as users type it)."""
    if value is not None and value < 0:
        raise VitedgeError(f"{param.opts[0]} must be >= 0 (got {value})")
    return value


ImgSize = Annotated[int | None, typer.Option(
    "--img-size", min=1, help="input side length in pixels (default: the model's)")]
ResolutionAlias = Annotated[int | None, typer.Option("--resolution", min=1, hidden=True)]

Data = Annotated[str, typer.Option(help="fashion-mnist, cifar10, camvid, cityscapes or an image folder")]
OptionalData = Annotated[str | None, typer.Option(
    "--data", help="fashion-mnist, cifar10, camvid, cityscapes or an image folder")]
DataDir = Annotated[Path | None, typer.Option(help="where the named dataset lives")]
BatchSize = Annotated[int, typer.Option(help="images per batch (under torchrun: all processes together)")]
Workers = Annotated[int, typer.Option(help="data-loader worker processes")]
Strict = Annotated[bool, typer.Option(help="unreadable images are an error, not skipped")]
Seed = Annotated[int, typer.Option(help="seed of everything drawn at random (init, data order, subsets)")]
Threads = Annotated[int | None, typer.Option(help="CPU threads")]
Runs = Annotated[int, typer.Option(min=1, help="timed runs per measurement")]
Calib = Annotated[int, typer.Option(help="calibration images from the training split")]
LearningRate = Annotated[float, typer.Option("--lr", help="peak learning rate")]
Alpha = Annotated[float, typer.Option(help="distillation weight of the KL term")]
Temperature = Annotated[float, typer.Option(help="distillation temperature")]
StageEpochs = Annotated[int, typer.Option(callback=non_negative, help="training epochs of this stage (0: none)")]
Out = Annotated[Path, typer.Option(help="folder for everything the command writes")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="write the results as JSON here")]
JsonOrStdout = Annotated[Path | None, typer.Option(
    "--json", help="write the results as JSON here (- for stdout, and nothing else)")]
Markdown = Annotated[Path | None, typer.Option(help="write the tables as Markdown here")]
LatencyPlan = Annotated[bool, typer.Option(
    help="INT8 for openvino/onnxruntime: time the attention and depthwise points in float on that runtime "
         "here and keep in float what runs faster so")]


def pick_img_size(img_size: int | None, resolution: int | None) -> int | None:
    """The input side length, from ``--img-size`` or its alias ``--resolution``."""
    return img_size if img_size is not None else resolution


def typed(ctx: typer.Context) -> dict[str, Any]:
    """The options typed on the command line (not defaulted), aliases under their main name."""
    # Compared by name: typer vendors click, so ParameterSource is not click's class.
    return {ALIASES.get(name, name): value for name, value in ctx.params.items()
            if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"}
