"""The one config model behind every vitedge config: frozen pydantic dataclasses.

Why pydantic v2 dataclasses: they validate every field against its type hint (nested configs
included) while staying plain frozen dataclasses, so ``dataclasses.replace``/``asdict`` and every
``QuantConfig(method="trio")`` call keep working; a config's own ``__post_init__`` keeps the rules
a type cannot say (ranges, names).

Two ways in:

- Python: ``TrainConfig(epochs=3)``, strictly typed (``"3"`` is not a number, ``True`` not an
  int; an int is a float and a list a tuple), nested configs given as instances.
- Text (YAML, JSON, command-line overrides): :func:`parse`, as strict, nested configs as mappings.

Either way the first problem is one :class:`~vitedge.errors.VitedgeError` line that names the
dotted key, with a close-match suggestion for an unknown one.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import pydantic.dataclasses
from pydantic import ConfigDict, TypeAdapter, ValidationError

from vitedge.errors import VitedgeError

__all__ = ["config_class", "dotted_fields", "flatten", "merge", "narrow", "parse", "to_dict", "unflatten",
           "with_overrides"]

T = TypeVar("T")

# strict: "3" is not a number and 1 is not True, in Python as in text
_CONFIG = ConfigDict(extra="forbid", strict=True)


def config_class(cls: type[T]) -> type[T]:
    """Class decorator: ``cls`` as a frozen, validated config dataclass whose constructor raises
    a one-line VitedgeError, as its own rules do."""
    rules = cls.__dict__.get("__post_init__")
    if rules is not None:
        # a broken rule as a ValueError lets pydantic say which nested config broke it
        @functools.wraps(rules)
        def __post_init__(self: Any) -> None:
            try:
                rules(self)
            except VitedgeError as err:
                raise _BrokenRule(str(err)) from None

        cls.__post_init__ = __post_init__
    validated = pydantic.dataclasses.dataclass(frozen=True, config=_CONFIG)(cls)
    init = validated.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        args = tuple(tuple(a) if isinstance(a, list) else a for a in args)  # a list is fine for a tuple
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
        try:
            init(self, *args, **kwargs)
        except ValidationError as err:
            raise VitedgeError(_one_line(type(self), err, f"{type(self).__name__} field")) from None

    validated.__init__ = __init__
    return validated


class _BrokenRule(ValueError):
    """A config rule's VitedgeError while pydantic validates (turned back into one)."""


def parse(cls: type[T], values: Mapping[str, Any], *, what: str = "setting") -> T:
    """``cls`` from JSON-like ``values`` (lists for tuples, dicts for nested configs), strictly typed;
    any problem is one VitedgeError line naming the dotted key (``what`` names the kind of key)."""
    if not isinstance(values, Mapping):
        raise VitedgeError(f"a {cls.__name__} must be a mapping of settings, got {values!r}")
    try:
        text = json.dumps(values)
    except (TypeError, ValueError) as err:
        raise VitedgeError(f"{cls.__name__} settings are not plain data: {err}") from err
    try:
        return TypeAdapter(cls).validate_json(text, strict=True)
    except ValidationError as err:
        raise VitedgeError(_one_line(cls, err, what)) from None


def _one_line(cls: type, err: ValidationError, what: str) -> str:
    problem = err.errors(include_url=False)[0]
    loc = [str(part) for part in problem["loc"]]
    key = ".".join(loc)
    if problem["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        known = dotted_fields(_owner(cls, loc[:-1]))
        close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.5)
        hint = f"did you mean {'.'.join([*loc[:-1], close[0]])!r}?" if close else f"known: {', '.join(known)}"
        return f"unknown {what} {key!r}: {hint}"
    value = problem.get("input")
    shown = "" if isinstance(value, Mapping) else f", got {value!r}"
    message = problem["msg"][0].lower() + problem["msg"][1:]
    if problem["type"] == "value_error":  # a config's own rule: its message says what and why
        rule = str(problem.get("ctx", {}).get("error", message))
        return f"{what} {key}: {rule}" if key else rule
    return f"{what} {key or cls.__name__}: {message}{shown}"


def _owner(cls: type, path: list[str]) -> type:
    """The config class that holds the dotted ``path`` below ``cls``."""
    for name in path:
        hint = typing.get_type_hints(cls).get(name) if dataclasses.is_dataclass(cls) else None
        nested = [c for c in (hint, *typing.get_args(hint)) if isinstance(c, type) and dataclasses.is_dataclass(c)]
        if not nested:
            return cls
        cls = nested[0]
    return cls


def dotted_fields(cls: type) -> list[str]:
    """The field names of config ``cls`` (one level)."""
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def narrow(obj: Any, cls: type[T]) -> T:
    """The ``cls`` part of config ``obj`` (an instance of a subclass of ``cls``)."""
    return cls(**{f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)})


def to_dict(obj: Any) -> dict[str, Any]:
    """A config as plain JSON data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"img_size": 64}}`` → ``{"data.img_size": 64}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def unflatten(tree: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``tree`` with dotted ``changes`` written into it (in place, returned); ``None`` values skip."""
    for dotted, value in changes.items():
        if value is None:
            continue
        *parents, key = dotted.split(".")
        node = tree
        for parent in parents:
            child = node.get(parent)
            if not isinstance(child, dict):
                child = node[parent] = {}
            node = child
        node[key] = list(value) if isinstance(value, tuple) else value
    return tree


def with_overrides(obj: T, changes: Mapping[str, Any], *, what: str = "setting") -> T:
    """A copy of config ``obj`` with dotted fields replaced (``{"optim.lr": 2e-3}``), validated as
    text input is. ``None`` replaces too (an optional field back to off)."""
    tree = to_dict(obj)
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        node = tree
        for parent in parents:
            if not isinstance(node.get(parent), dict):
                raise VitedgeError(f"unknown {what} {dotted!r}: {parent!r} is not a group of "
                                   f"{type(obj).__name__}")
            node = node[parent]
        node[key] = list(value) if isinstance(value, tuple) else value
    return parse(type(obj), tree, what=what)


def merge(tree: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge mapping ``update`` into ``tree`` (in place, returned)."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(tree.get(key), dict):
            merge(tree[key], value)
        else:
            tree[key] = value
    return tree

