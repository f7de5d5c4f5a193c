"""Command-line options built from config dataclasses: each setting is declared once, on its field.

    @dataclass
    class ViewArgs:
        path: str = arg(help="dataset folder", positional=True)
        scale: int = arg(2, "integer upscale factor", ge=1, le=16)

`add_options(parser, ViewArgs)` makes `PATH --scale N` from the fields (name, type, default, help,
bounds); `build(ViewArgs, namespace)` gives the dataclass back. Bounds are checked while parsing,
so a bad value stops the command before any work, with one line naming the option and the range:

    dreamdoom data view: --scale: must be at least 1, got 0

Types: int, float, str, bool (a flag: `--x`, or `--no-x` when the default is True), `X | None`
(None: "not given"), `tuple[int, int]` written WxH, `tuple[int, ...]` written 1,2,4.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

_MISSING = dataclasses.MISSING
MAX_SEED = 2**31 - 1  # the largest seed VizDoom and torch both take


def arg(
    default: Any = _MISSING,
    help: str = "",
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    choices: Sequence[Any] | None = None,
    flag: str | None = None,
    positional: bool = False,
    metavar: str | None = None,
    nargs: str | None = None,
    group: str | None = None,
) -> Any:
    """A dataclass field with its command-line description; no default makes the option required.
    Fields made without `arg` have no command-line form."""
    meta = dict(
        help=help,
        ge=ge,
        gt=gt,
        le=le,
        choices=choices,
        flag=flag,
        positional=positional,
        metavar=metavar,
        nargs=nargs,
        group=group,
    )
    return dataclasses.field(default=default, metadata={"cli": meta})


class UsageError(ValueError):
    """Options that are each valid but do not fit together (or a path that is not what an option wants);
    the message names the option."""


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def bound_error(value: float, ge=None, gt=None, le=None, got: bool = True) -> str | None:
    """Why `value` is outside the bounds, or None; `got` ends the reason with the value."""
    tail = f", got {_num(value)}" if got else ""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number{tail}"
    low = f"at least {_num(ge)}" if ge is not None else f"more than {_num(gt)}" if gt is not None else None
    too_low = (ge is not None and value < ge) or (gt is not None and value <= gt)
    too_high = le is not None and value > le
    if too_low or too_high:
        if low and le is not None:
            return f"must be {low} and at most {_num(le)}{tail}"
        return f"must be {low}{tail}" if low else f"must be at most {_num(le)}{tail}"
    return None


def _scalar(kind: type, text: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        what = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
        raise argparse.ArgumentTypeError(f"want {what}, got {text!r}") from None


def _converter(kind: Any, meta: dict) -> Callable[[str], Any]:
    """str -> value of `kind`, bounds checked; errors are ArgumentTypeError (argparse names the option)."""

    def check(value):
        why = (
            bound_error(value, meta["ge"], meta["gt"], meta["le"]) if isinstance(value, int | float) else None
        )
        if why:
            raise argparse.ArgumentTypeError(why)
        return value

    origin, inner = typing.get_origin(kind), typing.get_args(kind)
    if origin is tuple and inner == (int, int):

        def size(text: str) -> tuple[int, int]:
            parts = text.lower().split("x")
            if len(parts) != 2:
                raise argparse.ArgumentTypeError(f"want WIDTHxHEIGHT like 160x120, got {text!r}")
            return tuple(check(_scalar(int, p)) for p in parts)

        return size
    if origin is tuple and len(inner) == 2 and inner[1] is Ellipsis:

        def values(text: str) -> tuple:
            parts = [p for p in text.split(",") if p.strip()]
            if not parts:
                raise argparse.ArgumentTypeError(f"want comma-separated values like 1,2,4, got {text!r}")
            return tuple(check(_scalar(inner[0], p.strip())) for p in parts)

        return values
    if kind in (int, float):
        return lambda text: check(_scalar(kind, text))
    if kind is str:
        return str
    raise TypeError(f"no command-line form for a field of type {kind!r}")


def _unwrap_optional(kind: Any) -> Any:
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        rest = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return kind


def _range(meta: dict) -> str:
    """Bounds as help text: 1..8, >= 0, > 0, <= 1."""
    low = f"{_num(meta['ge'])}" if meta["ge"] is not None else None
    if low is not None and meta["le"] is not None:
        return f"{low}..{_num(meta['le'])}"
    parts = [
        f">= {low}" if low is not None else None,
        f"> {_num(meta['gt'])}" if meta["gt"] is not None else None,
    ]
    parts.append(f"<= {_num(meta['le'])}" if meta["le"] is not None else None)
    return ", ".join(p for p in parts if p)


def _show(default: Any) -> str:
    if isinstance(default, tuple):
        return "x".join(map(str, default)) if len(default) == 2 else ",".join(map(str, default))
    return str(default)


class _AddUp(argparse.Action):
    """A list option given twice adds up (`--variant a --variant b` is both): its first use replaces the
    default, each later one extends what was given. Scalar options keep argparse's rule: the last one wins."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        given = [] if current is None or current is self.default else list(current)
        setattr(namespace, self.dest, given + list(values))


def _takes_list(kind: Any, meta: dict) -> bool:
    """Whether the option takes a list: several words (nargs), or one comma-separated word (1,2,4)."""
    inner = typing.get_args(kind)
    return bool(meta["nargs"]) or (
        typing.get_origin(kind) is tuple and len(inner) == 2 and inner[1] is Ellipsis
    )


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add an option (or positional) for each field of dataclass `cls` that has a command-line form."""
    hints = typing.get_type_hints(cls)
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("cli")
        if meta is None:
            continue
        target = parser
        if meta["group"]:
            target = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        kind = _unwrap_optional(hints[f.name])
        required = f.default is _MISSING
        default = None if required else f.default
        help_text = meta["help"]
        if kind is bool:
            flag = meta["flag"] or ("--no-" if default else "--") + f.name.replace("_", "-")
            action = "store_false" if default else "store_true"
            target.add_argument(flag, dest=f.name, action=action, default=default, help=help_text)
            continue
        notes = [f"default {_show(default)}"] if default not in (None, "", ()) else []
        if meta["ge"] is not None or meta["gt"] is not None or meta["le"] is not None:
            notes.append(_range(meta))
        listed = _takes_list(kind, meta) and not meta["positional"]
        if listed:
            notes.append("repeatable")
        if notes:
            help_text = f"{help_text} ({'; '.join(notes)})".strip()
        kw = dict(
            type=_converter(kind, meta), help=help_text, choices=meta["choices"], metavar=meta["metavar"]
        )
        if meta["nargs"]:
            kw["type"] = _converter(typing.get_args(kind)[0], meta)
            kw["nargs"] = meta["nargs"]
        if listed:
            kw["action"] = _AddUp
        if meta["positional"]:
            target.add_argument(f.name, **kw)
        else:
            flag = meta["flag"] or "--" + f.name.replace("_", "-")
            target.add_argument(flag, dest=f.name, default=default, required=required, **kw)


def build(cls: type, namespace: argparse.Namespace) -> Any:
    """The dataclass `cls` from parsed options; fields with no command-line form keep their defaults."""
    names = {f.name for f in dataclasses.fields(cls) if "cli" in f.metadata}
    values = {k: v for k, v in vars(namespace).items() if k in names}
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = tuple(value)
    return cls(**values)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that reports a bad command line in one line, and that adds a command's options
    only when that command is parsed (so `dreamdoom collect` never imports torch to read its options).

    `options` returns the dataclasses the command's options come from."""

    command_prog = ""  # the command whose options were loaded last: where `--help` lists them

    def __init__(self, *args, options: Callable[[], Sequence[type]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._options = options

    def load_options(self) -> None:
        if self._options is not None:
            Parser.command_prog = self.prog
            load, self._options = self._options, None
            for cls in load():
                add_options(self, cls)

    def parse_known_args(self, args=None, namespace=None):
        self.load_options()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.load_options()
        return super().format_help()

    def error(self, message: str) -> typing.NoReturn:
        message = message.removeprefix("argument ")
        where = Parser.command_prog or self.prog
        hint = f" (`{where} --help` lists the options)" if "unrecognized arguments" in message else ""
        print(f"{self.prog}: {message}{hint}", file=sys.stderr)
        sys.exit(2)


@dataclasses.dataclass
class JsonOutput:
    json: bool = arg(False, "machine-readable output (JSON)")


def check_device(name: str | None, option: str = "--device") -> str:
    """The torch device a command runs on: `name`, or cuda when there is one; a clear error for a device
    that is malformed or not on this machine."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"{option} {name!r}: not a torch device (want cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{option} {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise UsageError(f"{option} {name}: not supported (want cpu or cuda)")
    return name
