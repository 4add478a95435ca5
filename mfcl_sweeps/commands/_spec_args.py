"""What `count` and `plan` share: the overrides of a sweep's command line, read as the mfcl
sweeper reads them: task overrides, `hydra.sweeper.<knob>=` settings that shape the runs (seeds,
max_runs, exclude, ...; with `+`/`++` too), `hydra.sweeper.sweep_file=` in place of FILE, and
every other `hydra.*` or `hydra/...` override accepted and left out of the runs, as Hydra leaves
it out of the sweeper's arguments."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Optional

from mfcl_sweeps.errors import SweepSpecError

_KNOB_PREFIX = "hydra.sweeper."
# hydra.sweeper options that do not change which runs a sweep has (MfclSweeperConf's other fields;
# tests/test_counters.py checks this list against it)
RUN_OPTIONS = ("max_batch_size", "dry_run", "validate", "name", "resume", "only_runs", "claim", "claim_timeout",
               "cluster", "store", "fail_on_error", "allow_behind", "notify", "require_up_to_date", "secret_keys")


def add_spec_arguments(parser: argparse.ArgumentParser,
                       add_options: Optional[Callable[[argparse.ArgumentParser], None]] = None) -> None:
    """FILE and OVERRIDE...; `add_options` adds the command's own --options, which may also come
    after or between the overrides (argparse alone would stop at the first one)."""
    if add_options:
        add_options(parser)
    parser.add_argument("sweep_file", nargs="?", metavar="FILE",
                        help="sweep file (YAML or JSON, any supported form), or hydra.sweeper.sweep_file=FILE")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="OVERRIDE",
                        help="the sweep's overrides as given to the sweeper: task overrides crossed with the "
                             "file (a=1,2 b=range(3)), hydra.sweeper.<knob>=value (seeds, max_runs, shuffle, "
                             "seed, exclude, ...; +/++ too); other hydra overrides are accepted and ignored")
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


def _hydra_key(text: str) -> str:
    """The key of a Hydra-side override (`hydra.x=`, `+hydra.x=`, `++hydra.x=`, `hydra/launcher=`),
    else ''."""
    key = text.split("=", 1)[0].lstrip("+")
    return key if key == "hydra" or key.startswith(("hydra.", "hydra/")) else ""


def load_from_args(args: argparse.Namespace) -> Any:
    from mfcl_sweeps.expand import check_not_empty
    from mfcl_sweeps.spec import SpecOptions, load_spec
    from mfcl_sweeps.spec import overrides as ov

    _split_options(args)
    if args.sweep_file is not None and "=" in args.sweep_file:  # no FILE: the first override
        args.overrides, args.sweep_file = [args.sweep_file, *args.overrides], None
    knobs = {f.name for f in dataclasses.fields(SpecOptions)}
    options: dict[str, Any] = {}
    params: dict[str, str] = {}
    task = []
    for text in args.overrides:
        key = _hydra_key(text)
        if not key.startswith(_KNOB_PREFIX):
            if not key:
                task.append(text)
            continue  # hydra/launcher=..., hydra.launcher.*: not the sweeper's, as in a Hydra run
        name, value = key[len(_KNOB_PREFIX):], text.split("=", 1)[1]
        if name.startswith("params."):
            params[name[len("params."):]] = value
        elif name == "sweep_file":
            if args.sweep_file is not None:
                raise SweepSpecError(f"the sweep file is given twice ({args.sweep_file} and {value}); give one",
                                     key=key)
            args.sweep_file = value
        elif name in knobs:
            try:
                parsed = ov.parse_override(f"x={value}").value()
            except Exception as err:
                raise SweepSpecError(f"cannot parse value {value!r}: {str(err).splitlines()[0]}", key=key) from None
            # as the sweeper reads its options: null or an empty {} / [] means "not given"
            options[name] = None if parsed in (None, {}, []) else parsed
        elif name.split(".", 1)[0] not in RUN_OPTIONS:
            raise SweepSpecError("not an option of the mfcl sweeper (known: sweep_file, params.<key>, "
                                 f"{', '.join(sorted(knobs | set(RUN_OPTIONS)))})", key=key)
    spec = load_spec(args.sweep_file, cli_overrides=task, params=params, options=SpecOptions(**options))
    check_not_empty(spec)
    return spec
