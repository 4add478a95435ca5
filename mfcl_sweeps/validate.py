"""Check a sweep against the app's config before anything launches, without composing every run.

Per block (group): compose its first run once; then check each distinct setting once against
that config. A single plain `key=value` is applied to a copy of the composed config the way
Hydra applies overrides (keys must exist, values must fit typed nodes); a setting that selects a
config group option, or sets several keys together (paired, runs), is checked by composing the
first run with that setting swapped in (so is a plain one that fails that cheap check). Cost
grows with the sum of the value lists, not their product.

Only a run of the sweep that does not compose is refused (Hydra's BasicSweeper refuses those
too, composing every run first): a sweep Hydra would run never is. The options a group lists
(which miss those from `hydra.searchpath`) only word the message of a run that failed to compose.
"""
from __future__ import annotations

import copy
import re
from functools import lru_cache
from typing import Any, Sequence

from mfcl_sweeps.errors import SweepSpecError
from mfcl_sweeps.spec import overrides as ov
from mfcl_sweeps.spec.types import Block, Setting, SweepSpec


def _reason(err: BaseException) -> str:
    """Hydra's message and its cause's, first lines only (the rest is a traceback-ish dump)."""
    parts, name = [], type(err).__name__
    while err is not None and len(parts) < 3:
        text = str(err).strip().splitlines()
        if text and text[0] not in parts:
            parts.append(text[0])
        err = err.__cause__
    if len(parts) > 1 and parts[0].startswith("Error merging override"):
        parts = parts[1:]  # the override is already named by the caller
    return ": ".join(parts) or name


class _BlockCheck:
    def __init__(self, block: Block, config_loader: Any, master_config: Any, many_groups: bool) -> None:
        self.block, self.loader, self.master = block, config_loader, master_config
        self.where = f"group {block.group!r}: " if many_groups else ""
        self.base = tuple(axis.settings[0] for axis in block.axes)
        self.group_options = lru_cache(maxsize=None)(self._group_options)

    def compose(self, combo: Sequence[Setting]) -> Any:
        overrides = [o for s in combo for o in s.overrides]
        return self.loader.load_sweep_config(self.master, overrides)

    def _group_options(self, key: str) -> tuple[str, ...]:
        try:
            return tuple(self.loader.get_group_options(key))
        except Exception:  # not a group path at all
            return ()

    def is_group(self, key: str, choices: Any) -> bool:
        return key in choices or "@" in key or "/" in key or bool(self.group_options(key))

    def run(self) -> None:
        try:
            cfg = self.compose(self.base)
        except Exception as err:
            self.blame_base(err)
        choices = dict(cfg.hydra.runtime.choices)
        from omegaconf import open_dict

        task = cfg  # composed for this check alone: no copy needed
        with open_dict(task):
            del task["hydra"]
        checked: set[tuple[str, ...]] = set()
        for position, axis in enumerate(self.block.axes):
            for setting in axis.settings:
                if not setting.overrides or setting.overrides in checked:
                    continue
                checked.add(setting.overrides)
                if len(setting.overrides) == 1 and not self.touches_group(setting, choices):
                    try:
                        self.apply_one(setting.overrides[0], task, axis.source)
                        continue
                    except SweepSpecError:
                        pass  # the key may come with another group option: composing decides
                elif setting is axis.settings[0]:
                    continue  # composed in the first run
                self.compose_with(position, setting, axis.source, choices)

    def compose_with(self, position: int, setting: Setting, source: str, choices: Any) -> None:
        """Compose the first run with `setting` swapped in; reject only what cannot run."""
        combo = self.base[:position] + (setting,) + self.base[position + 1:]
        try:
            self.compose(combo)
        except Exception as err:
            self.check_groups(setting, choices, source)  # a clearer message for a mistyped group option
            raise SweepSpecError(f"{self.where}{' '.join(setting.overrides)}: {_reason(err)}", key=source) from None

    def touches_group(self, setting: Setting, choices: Any) -> bool:
        return any(self.is_group(k, choices) for k in setting.keys)

    def check_groups(self, setting: Setting, choices: Any, source: str) -> None:
        """A clearer message than composition gives for a mistyped group option."""
        for text, key in zip(setting.overrides, setting.keys):
            if "=" not in text or not self.is_group(key, choices):
                continue
            value = text.split("=", 1)[1]
            options = self.group_options(key)
            if options and value not in options and value != "null" and not value.startswith("["):
                raise SweepSpecError(f"{self.where}{value!r} is not an option of config group {key!r} "
                                     f"(options: {', '.join(options)})", key=source)

    def apply_one(self, text: str, task: Any, source: str) -> None:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        parsed = parse_literal(text) or ov.parse_override(text)
        if parsed.is_hydra_override() or parsed.is_delete():
            return  # hydra.* never reaches the task config; a deletion was composed in the first run
        if parsed.is_add():
            # The first run already added this key; check the value as `++` would set it.
            parsed = parse_literal("+" + text) or ov.parse_override("+" + text)
        leaf = _scalar_leaf(task, parsed)
        saved = leaf and leaf[2]._value()
        try:
            # A scalar set on an existing value node changes that node (or replaces it in its
            # parent), so it is checked on the one config and both are put back; anything else
            # (a new key, a dict or list value) gets its own copy of the config. A deep copy per
            # value made 1,000 values take seconds.
            ConfigLoaderImpl._apply_overrides_to_config([parsed], task if leaf else copy.deepcopy(task))
        except Exception as err:
            raise SweepSpecError(f"{self.where}{text}: {_reason(err)}", key=source) from None
        finally:
            if leaf:
                parent, key, node = leaf
                node._val = saved  # the raw value: an interpolation stays one
                parent.__dict__["_content"][key] = node

    def blame_base(self, err: Exception) -> None:
        """The first run does not compose: name the setting responsible if one alone is."""
        for axis, setting in zip(self.block.axes, self.base):
            try:
                self.compose((setting,))
            except Exception as single:
                raise SweepSpecError(f"{self.where}{' '.join(setting.overrides)}: {_reason(single)}",
                                     key=axis.source) from None
        shown = " ".join(o for s in self.base for o in s.overrides)
        raise SweepSpecError(f"{self.where}the first run does not compose ({shown}): {_reason(err)}") from None


# `key=value` with a plain literal value: Hydra's grammar types these as below. Parsing them here
# skips Hydra's ANTLR parser (milliseconds per value); anything else, or any doubt, goes to it.
_LITERAL = re.compile(r"(?P<add>\+{0,2})(?P<key>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)=(?P<value>"
                      r"(?P<int>[+-]?(?:0|[1-9]\d*))"
                      r"|(?P<float>[+-]?(?:(?:0|[1-9]\d*)?\.\d+|(?:0|[1-9]\d*)\.?)(?:[eE][+-]?\d+)?)"
                      r"|(?P<word>[A-Za-z_]\w*))", re.ASCII)
_WORDS = {"true": True, "false": False, "null": None}


def parse_literal(text: str) -> Any:
    """Hydra's Override for `[+|++]key=literal` (int, float, true/false/null, a plain word), else None."""
    from hydra.core.override_parser.types import Override, OverrideType, ValueType

    m = _LITERAL.fullmatch(text)
    if m is None or m["key"].split(".", 1)[0] == "hydra":
        return None
    if m["int"] is not None:
        value: Any = int(m["int"])
    elif m["float"] is not None:
        value = float(m["float"])
    elif m["word"].lower() in ("inf", "nan") or (m["word"].lower() in _WORDS and m["word"] not in _WORDS):
        return None  # spellings Hydra types in other cases; its parser decides
    else:
        value = _WORDS.get(m["word"], m["word"])
    kind = (OverrideType.CHANGE, OverrideType.ADD, OverrideType.FORCE_ADD)[len(m["add"])]
    return Override(type=kind, key_or_group=m["key"], value_type=ValueType.ELEMENT, _value=value, input_line=text)


def _scalar_leaf(task: Any, parsed: Any) -> Any:
    """(parent, key, value node) that a plain scalar override sets, or None (not one, or unsure)."""
    from omegaconf import DictConfig, ValueNode

    if parsed.package is not None or isinstance(parsed.value(), (dict, list)):
        return None
    *path, key = parsed.key_or_group.split(".")
    parent = task
    for part in path:
        parent = parent._get_node(part, throw_on_missing_key=False)
        if not isinstance(parent, DictConfig):  # list items and the like: left to the copy
            return None
    node = parent._get_node(key, throw_on_missing_key=False)
    return (parent, key, node) if isinstance(node, ValueNode) else None


def validate_spec(spec: SweepSpec, config_loader: Any, master_config: Any) -> None:
    """Raise SweepSpecError naming the key and value that the app's config rejects."""
    for block in spec.blocks:
        _BlockCheck(block, config_loader, master_config, len(spec.blocks) > 1).run()
