"""Sweep specs: a sweep file (any supported dialect), the `hydra.sweeper.*` options and the
command-line overrides, normalized into one `SweepSpec`.

A spec is a list of blocks (one per group entry); a block is a list of axes; the block's runs
are the Cartesian product of its axes, each axis contributing one `Setting` (a few overrides,
maybe job env, a run name, a budget, resources). Every value is turned into its Hydra
override string here, once, so expansion only concatenates. All errors are `SweepSpecError`
naming the key (and the file line when the value came from a file).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

from mfcl_sweeps.spec import sweepfile
from mfcl_sweeps.spec.blocks import _block, _final_axes, capped_blocks
from mfcl_sweeps.spec.cli import _cli_axes
from mfcl_sweeps.spec.dialects import (
    GROUP_ENTRY_KEYS,
    NATIVE_KEYS,
    PARAM_FILE_KEYS,
    _detect,
    _file_root,
)
from mfcl_sweeps.spec.fields import (
    Ctx,
    need_list,
    need_mapping,
    parse_aliases,
)
from mfcl_sweeps.spec.knobs import _exclude, _knob, _order_knobs, _seed_axis, _Source
from mfcl_sweeps.spec.parts import _Part, _part
from mfcl_sweeps.spec.types import SpecOptions, SweepSpec

# ----------------------------------------------------------------------------- entry point


def _plain(value: Any) -> Any:
    """OmegaConf containers (hydra.sweeper.* values) as plain Python."""
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    return value


_INLINE_KEYS = ("grid", "paired", "runs", "run_defaults")


def _file_parts(path: str, doc: Any, dialect: str, aliases: dict, config_loader: Any,
                seed: Optional[int]) -> tuple[_Source, _Part, list, dict]:
    """(knob source, root part, [(group entry, its path)], spec metadata) of a sweep file."""
    ctx = Ctx(path, "", aliases, config_loader, dialect)
    root, metadata, prefix = _file_root(doc, dialect, ctx, seed)
    ctx = Ctx(path, prefix, aliases, config_loader, dialect)
    entries: list = []
    groups_key = "groups" if "groups" in root else "grid" if isinstance(root.get("grid"), list) else None
    if groups_key is not None:
        items = need_list(root[groups_key], ctx, groups_key, root, groups_key, "group entries")
        entries = [(entry, f"{groups_key}[{i}]", items, i) for i, entry in enumerate(items)]
    allowed = (*PARAM_FILE_KEYS, *NATIVE_KEYS) if dialect == "param-file" else NATIVE_KEYS
    # The root itself (not a filtered copy) so its keys keep their lines; `_part` leaves the knobs
    # and a `grid:`/`groups:` list of entries alone.
    root_part = _part(root, ctx, "", allowed)
    parts = []
    for entry, here, items, i in entries:
        need_mapping(entry, ctx, here, items, i, "a group entry: group, params, budget, ...")
        parts.append(_part(entry, ctx, f"{here}.", GROUP_ENTRY_KEYS))
    return _Source(root, ctx), root_part, parts, metadata


def _alias_table(doc: Any, dialect: str, path: Optional[str], inline: dict) -> dict:
    holder = doc.get("sweep") if dialect == "hsm" else doc
    holder = holder if isinstance(holder, dict) else {}
    file_ctx = Ctx(path, "sweep." if dialect == "hsm" else "", {}, None, dialect)
    opt_ctx = Ctx(None, "hydra.sweeper.", {}, None, "native")
    return parse_aliases([(holder.get("aliases"), file_ctx, "aliases", holder),
                          (inline.get("aliases"), opt_ctx, "aliases", inline)])

def load_spec(sweep_file: Optional[str], *, cli_overrides: Sequence[str] = (),
              params: Optional[Mapping[str, str]] = None, options: Optional[SpecOptions] = None,
              config_loader: Any = None) -> SweepSpec:
    """The normalized spec of a sweep file + hydra.sweeper options + command-line overrides.

    `config_loader` is needed only for `glob()` sweeps. Raises SweepSpecError for malformed input.
    """
    options = options or SpecOptions()
    inline = {f.name: _plain(getattr(options, f.name)) for f in dataclasses.fields(options)}
    inline = {k: v for k, v in inline.items() if v is not None}
    doc = sweepfile.read(sweep_file) if sweep_file is not None else None
    dialect = _detect(doc, sweep_file) if sweep_file is not None else "native"
    aliases = _alias_table(doc, dialect, sweep_file, inline)

    sources: list[_Source] = []
    base, entry_parts, metadata = _Part(), [], {}
    if sweep_file is not None:
        source, base, entry_parts, metadata = _file_parts(
            sweep_file, doc, dialect, aliases, config_loader, inline.get("seed"))
        sources.append(source)
    opt_ctx = Ctx(None, "hydra.sweeper.", aliases, config_loader, "native")
    sources.append(_Source(inline, opt_ctx))
    base = base.under(_part({k: v for k, v in inline.items() if k in _INLINE_KEYS}, opt_ctx, "", _INLINE_KEYS))
    blocks = [_block(base.under(p)) for p in entry_parts] or [_block(base)]

    order = _order_knobs(sources)
    # max_runs caps the work before validation and the plan line; not when excludes or a
    # shuffle decide which runs come first (those are counted in closed form, or refused)
    cap = order["max_runs"] if _knob("exclude", sources)[1] is None and not order["shuffle"] else None
    cli = _cli_axes(_plain(params) or {}, cli_overrides, config_loader, cap)
    seeds = _seed_axis(sources)
    blocks = [dataclasses.replace(b, axes=_final_axes(b, cli, seeds)) for b in blocks]
    known_keys = {k for b in blocks for a in b.axes for s in a.settings for k, _ in s.values}
    exclude = tuple(_exclude(sources, known_keys))
    exclude_at = (None, None, None)
    if exclude:
        err = next(s for s in sources if s.get("exclude")).error("exclude", "")
        exclude_at = (err.key, err.file, err.line)
    cap = cap if not exclude else None
    return SweepSpec(blocks=tuple(capped_blocks(blocks, cap)), exclude=exclude, dialect=dialect,
                     source=sweep_file, metadata=metadata, exclude_at=exclude_at, **order)
