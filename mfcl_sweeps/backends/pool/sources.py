"""The pool's `sources` list -> one SourceSpec per source, checked before anything runs.

An entry is either the short form `KIND[:NAME][:SLOTS]` (`local:4`, `ssh:gpu1:8`, `slurm:32`,
`slurm:cluster:32`, `hpc:cluster:32`) or a mapping: one launcher's own options plus the pool's
keys (POOL_KEYS). A named preset fills in what the short form cannot say (partition, account,
SSH workdir...): `presets.NAME` in the pool's options, else `<preset_dir>/NAME.yaml`, a launcher
preset as `mfcl-sweeps init` writes them (`defaults: [mfcl_slurm, _self_]` + options). Every
option keeps the meaning it has in its own launcher and is checked by that launcher's backend.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from mfcl_sweeps.errors import OptionError

KINDS = ("local", "torchrun", "ssh", "slurm", "pbs")
SCHEDULERS = ("slurm", "pbs")
# keys of a source entry that belong to the pool; every other key is an option of its launcher
POOL_KEYS = ("kind", "name", "slots", "max_jobs", "weight", "preset", "gpus", "nodes", "partitions")
_SHORT = re.compile(r"^(?P<kind>[a-z]+)(?::(?P<name>[^\s]*?))?(?::(?P<slots>\d+))?$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
DEFAULT_SCHEDULER_SLOTS = 64


@dataclass(frozen=True)
class SourceSpec:
    """One source: a child backend of `kind` with its own launcher `options`, at most `slots`
    runs at once, and the resources it can give one run (None: no limit the pool knows of)."""

    name: str
    kind: str
    slots: int
    options: Mapping[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    gpus: Optional[int] = None  # GPUs per node a run may ask for
    nodes: Optional[int] = None  # nodes a run may ask for
    partitions: tuple[str, ...] = ()  # partitions/queues a run may ask for (empty: any, schedulers only)

    def describe(self) -> str:
        gpus = "any" if self.gpus is None else self.gpus
        return f"{self.name} ({self.kind}, {self.slots} slot(s), weight {self.weight:g}, gpus/node {gpus})"


def where(i: int, name: Optional[str] = None) -> str:
    return f"hydra.launcher.sources[{i}]" + (f" ({name})" if name else "")


def read_preset(name: str, presets: Mapping[str, Any], preset_dir: Optional[str]) -> Optional[dict]:
    """A preset's options with its `kind` (from `defaults: [mfcl_KIND]`), or None if there is none."""
    if name in presets:
        return dict(presets[name])
    if not preset_dir:
        return None
    path = os.path.join(preset_dir, f"{name}.yaml")
    if not os.path.isfile(path):
        return None
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    if not isinstance(data, dict):
        raise OptionError(f"{path}: a launcher preset must be a mapping of options; rewrite it as such")
    for entry in data.pop("defaults", None) or []:
        if isinstance(entry, str) and entry.startswith("mfcl_") and entry[5:] in KINDS:
            data.setdefault("kind", entry[5:])
    data.pop("_target_", None)
    return data


def parse_short(text: str, i: int) -> dict:
    """`KIND[:NAME][:SLOTS]` -> an entry mapping (the preset, if any, is merged in later)."""
    m = _SHORT.match(text.strip())
    if not m:
        raise OptionError(f"{where(i)}={text!r}: expected KIND[:NAME][:SLOTS], e.g. local:4, ssh:gpu1:8 or slurm:32")
    name, slots = m.group("name"), m.group("slots")
    if slots is None and name and name.isdigit():  # `local:4`: a number names slots, not a source
        name, slots = None, name
    entry: dict[str, Any] = {"kind": m.group("kind")}
    if name:
        entry["name"] = name
    if slots:
        entry["slots"] = int(slots)
    entry["_short"] = True
    return entry


def _merge_preset(entry: dict, i: int, presets: Mapping[str, Any], preset_dir: Optional[str]) -> dict:
    short = entry.pop("_short", False)
    wanted = entry.get("preset") or (entry.get("name") if short else None) or (entry["kind"] if short else None)
    preset = read_preset(str(wanted), presets, preset_dir) if wanted else None
    if entry.get("preset") and preset is None:
        path = os.path.join(preset_dir or ".", f"{entry['preset']}.yaml")
        raise OptionError(f"{where(i)}.preset={entry['preset']!r}: no such preset (not in hydra.launcher.presets, "
                          f"no {path}); name an existing one")
    kind = entry["kind"]
    if preset is not None:
        pkind = preset.pop("kind", None)
        if kind == "hpc":
            kind = pkind
        elif pkind and pkind != kind:
            raise OptionError(f"{where(i)}={kind}:{wanted}: preset {wanted!r} is a {pkind} launcher, not {kind}; "
                              f"write {pkind}:{wanted}")
        entry = {**preset, **{k: v for k, v in entry.items() if k != "kind"}, "kind": kind}
    if kind == "hpc":
        raise OptionError(f"{where(i)}: hpc:NAME needs a Slurm or PBS preset named NAME; add "
                          f"{os.path.join(preset_dir or '.', str(wanted) + '.yaml')} or use slurm:/pbs:")
    if short and kind == "ssh" and "hosts" not in entry and entry.get("name"):
        # `ssh:gpu1:8` without a preset: the host itself, in the SSH launcher's short form
        entry["hosts"] = [f"{entry['name']}:{entry.get('slots', 1)}"]
        entry["name"] = re.sub(r"[^A-Za-z0-9_.-]", "_", entry["name"])
    return entry


def _int(entry: Mapping[str, Any], key: str, i: int, name: str, low: int) -> Optional[int]:
    v = entry.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise OptionError(f"{where(i, name)}.{key}={v!r}: must be a whole number >= {low}; set one")
    return v


def default_slots(kind: str, options: Mapping[str, Any]) -> int:
    if kind == "local":
        return int(options.get("max_concurrent") or os.cpu_count() or 1)
    if kind == "torchrun":
        return int(options.get("max_concurrent") or 1)
    if kind == "ssh":
        return sum(_host_slots(h) for h in options.get("hosts") or []) or 1
    return int(options.get("array_parallelism") or DEFAULT_SCHEDULER_SLOTS)


def _host_slots(host: Any) -> int:
    if isinstance(host, Mapping):
        return int(host.get("slots") or 1)
    m = re.search(r":(\d+)$", str(host))
    return int(m.group(1)) if m else 1


def default_gpus(kind: str, options: Mapping[str, Any]) -> Optional[int]:
    """GPUs per node a source gives when it declares none: a scheduler's decide themselves (no
    limit here); this machine's are counted; an SSH host's are unknown, so none."""
    if kind in SCHEDULERS:
        return None
    if kind in ("local", "torchrun"):
        from mfcl_sweeps.backends.children import visible_gpus

        return len(visible_gpus(options.get("gpus")))
    return 0


def source_spec(entry: Mapping[str, Any], i: int) -> SourceSpec:
    kind = entry.get("kind")
    if kind not in KINDS:
        raise OptionError(f"{where(i)}.kind={kind!r}: unknown source kind; use one of {', '.join(KINDS)}")
    name = str(entry.get("name") or kind)
    if not _NAME.match(name):
        raise OptionError(f"{where(i)}.name={name!r}: use letters, digits, '.', '_' or '-' (it names log files)")
    options = {k: v for k, v in entry.items() if k not in POOL_KEYS}
    if "slots" in entry and "max_jobs" in entry:
        raise OptionError(f"{where(i, name)}: give slots or max_jobs, not both (they mean the same)")
    slots = _int(entry, "slots", i, name, 1) or _int(entry, "max_jobs", i, name, 1) or default_slots(kind, options)
    if kind in ("local", "torchrun") and options.get("max_concurrent") is None:
        options["max_concurrent"] = slots  # the child never starts more than the pool gives it
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
        raise OptionError(f"{where(i, name)}.weight={weight!r}: must be a number > 0; set one")
    gpus = _int(entry, "gpus", i, name, 0)
    nodes = _int(entry, "nodes", i, name, 1) if kind not in SCHEDULERS else None
    partitions = entry.get("partitions")
    if partitions is None:
        own = options.get("partition" if kind == "slurm" else "queue")
        partitions = [own] if kind in SCHEDULERS and own else []
    elif isinstance(partitions, str):
        partitions = [partitions]
    if partitions and kind not in SCHEDULERS:
        raise OptionError(f"{where(i, name)}.partitions: only slurm and pbs sources have partitions; remove it")
    if kind not in SCHEDULERS and nodes is None:
        nodes = None if kind == "torchrun" else 1
    return SourceSpec(name=name, kind=kind, slots=slots, options=options, weight=float(weight),
                      gpus=default_gpus(kind, options) if gpus is None else gpus, nodes=nodes,
                      partitions=tuple(str(p) for p in partitions))


@dataclass(frozen=True)
class PoolSetup:
    options: Any  # the pool's own frozen options (mfcl_sweeps.backends.pool.config)
    sources: tuple[SourceSpec, ...]


def parse_setup(raw: Mapping[str, Any]) -> PoolSetup:
    """`hydra.launcher.*` of mfcl_pool, every source's options checked by its own backend."""
    from mfcl_sweeps import backends
    from mfcl_sweeps.backends.pool.config import PoolLauncherConf
    from mfcl_sweeps.options import parse_options

    opts = parse_options(PoolLauncherConf, raw, "mfcl_pool")
    specs = parse_sources(opts.sources, opts.presets, opts.preset_dir)
    for i, spec in enumerate(specs):
        try:
            backends.get(spec.kind).check_options(spec.options)
        except OptionError as err:
            raise OptionError(f"{where(i, spec.name)}: {err}") from None
    return PoolSetup(opts, tuple(specs))


def parse_sources(sources: Any, presets: Mapping[str, Any], preset_dir: Optional[str]) -> list[SourceSpec]:
    """`hydra.launcher.sources` -> SourceSpecs; OptionError (one line) for the first bad entry."""
    specs = []
    for i, raw in enumerate(sources):
        if isinstance(raw, str):
            entry = parse_short(raw, i)
        elif isinstance(raw, Mapping):
            entry = dict(raw)
            if "kind" not in entry:
                raise OptionError(f"{where(i)}: missing kind; add kind: one of {', '.join(KINDS)}")
        else:
            raise OptionError(f"{where(i)}={raw!r}: expected KIND[:NAME][:SLOTS] or a mapping with kind")
        specs.append(source_spec(_merge_preset(entry, i, presets, preset_dir), i))
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise OptionError(f"hydra.launcher.sources: two sources are named {dupes[0]!r}; give each a distinct name")
    return specs
