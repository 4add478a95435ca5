"""What `count` and `plan` share: a sweep file, command-line overrides, and `hydra.sweeper.<knob>=`
settings (seeds, max_runs, exclude, ...) read as they would be in a Hydra run."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Optional

from mfcl_sweeps.errors import SweepSpecError

_KNOB_PREFIX = "hydra.sweeper."


def add_spec_arguments(parser: argparse.ArgumentParser,
                       add_options: Optional[Callable[[argparse.ArgumentParser], None]] = None) -> None:
    """FILE and OVERRIDE...; `add_options` adds the command's own --options, which may also come
    after or between the overrides (argparse alone would stop at the first one)."""
    if add_options:
        add_options(parser)
    parser.add_argument("sweep_file", help="sweep file (YAML or JSON, any supported form)")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="OVERRIDE",
                        help="Hydra overrides crossed with the file (a=1,2 b=range(3)), and "
                             "hydra.sweeper.<knob>=value (seeds, max_runs, shuffle, seed, exclude, ...)")
    parser.set_defaults(_add_options=add_options)


def _split_options(args: argparse.Namespace) -> None:
    """Move --options found among the overrides onto `args` (Hydra overrides never start with '-')."""
    if args._add_options is None:
        rest = args.overrides
    else:
        late = argparse.ArgumentParser(add_help=False, exit_on_error=False)
        args._add_options(late)
        try:
            found, rest = late.parse_known_args(args.overrides)
        except argparse.ArgumentError as err:
            raise SweepSpecError(str(err)) from None
        for name, value in vars(found).items():
            if value != late.get_default(name):
                setattr(args, name, value)
    unknown = [a for a in rest if a.startswith("-")]
    if unknown:
        raise SweepSpecError("unknown option (Hydra overrides look like key=value)", key=unknown[0])
    args.overrides = rest


def load_from_args(args: argparse.Namespace) -> Any:
    from mfcl_sweeps.expand import check_not_empty
    from mfcl_sweeps.spec import SpecOptions, load_spec
    from mfcl_sweeps.spec import overrides as ov

    _split_options(args)
    knobs = {f.name for f in dataclasses.fields(SpecOptions)}
    options: dict[str, Any] = {}
    params: dict[str, str] = {}
    task = []
    for text in args.overrides:
        if not text.startswith(_KNOB_PREFIX):
            task.append(text)
            continue
        name, _, value = text[len(_KNOB_PREFIX):].partition("=")
        if name.startswith("params."):
            params[name[len("params."):]] = value
            continue
        if name not in knobs:
            raise SweepSpecError(f"unknown sweeper option (known: {', '.join(sorted(knobs))}, params.<key>)",
                                 key=text.split("=", 1)[0])
        try:
            options[name] = ov.parse_override(f"x={value}").value()
        except Exception as err:
            raise SweepSpecError(f"cannot parse value {value!r}: {str(err).splitlines()[0]}",
                                 key=text.split("=", 1)[0]) from None
    spec = load_spec(args.sweep_file, cli_overrides=task, params=params, options=SpecOptions(**options))
    check_not_empty(spec)
    return spec
