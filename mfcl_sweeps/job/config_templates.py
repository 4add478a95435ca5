"""Composed configs shared by forked jobs that pick the same config groups.

Composing a job's config (defaults list, merging every config file and Hydra's own structured
config) is most of what a small job costs, yet it depends only on the overrides that choose
config groups or touch `hydra.*`. Hydra's loader applies every other override (`lr=0.1`, `+x=3`,
`~y`) to the composed config afterwards. So the driver composes once per distinct choice of
groups, and each job forked from it applies its own value overrides to its copy-on-write copy,
the same way and in the same order as Hydra's loader (`ConfigLoaderImpl._load_configuration_impl`
in hydra-core 1.3; tests/test_templates.py compares the two config for config).

A choice of groups seen once composes in its job as before, so a sweep over nothing but config
groups costs the driver nothing; anything this module cannot classify does too.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
from typing import Any, Optional, Sequence

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PreparedConfig:
    """What a forked job needs to finish composing its config without Hydra's loader."""

    base: Any  # composed for the template's overrides; mutated only in the forked job
    value_overrides: list  # parsed; applied to `base` in order
    task_overrides: list  # the job's overrides that are not Hydra's, in order

    def compose(self) -> Any:
        """The job's config, as `load_sweep_config` would compose it. Only call in a forked job:
        it mutates the template, which only the job's own copy-on-write copy may see."""
        from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
        from hydra.types import RunMode
        from omegaconf import open_dict

        cfg = self.base
        ConfigLoaderImpl.validate_sweep_overrides_legal(self.value_overrides, run_mode=RunMode.RUN, from_shell=True)
        ConfigLoaderImpl._apply_overrides_to_config(self.value_overrides, cfg)
        cfg.hydra.overrides.task = [o.input_line for o in self.task_overrides]
        with open_dict(cfg.hydra):
            for key in cfg.hydra.job.env_copy:  # this job's environment, not the driver's
                cfg.hydra.job.env_set[key] = os.environ[key]
        dirname = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=self.task_overrides, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep,
            exclude_keys=dirname.exclude_keys)
        return cfg


def touches_hydra(override: Any) -> bool:
    return override.key_or_group.split(".")[0].split("/")[0] == "hydra"


def remember(cache: collections.OrderedDict, key: tuple, value: Any, capacity: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > capacity:
        cache.popitem(last=False)


class ConfigTemplates:
    """Driver-side cache of composed templates, keyed by a job's config-shaping overrides."""

    def __init__(self, session: Any, capacity: int = 16, seen_capacity: int = 1024) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.session = session
        self.loader = session.hydra_context.config_loader
        self.parser = OverridesParser.create()
        self.capacity, self.seen_capacity = capacity, seen_capacity
        self.templates: collections.OrderedDict[tuple, Any] = collections.OrderedDict()  # None: failed
        self.seen: collections.OrderedDict[tuple, None] = collections.OrderedDict()
        self.is_group: dict[str, bool] = {}

    def _group_exists(self, name: str) -> bool:
        if name not in self.is_group:
            self.is_group[name] = bool(self.loader.repository.group_exists(name))
        return self.is_group[name]

    def _shapes_config(self, override: Any) -> bool:
        """Whether Hydra uses this override while composing (a config group choice, told apart as
        its defaults list does, or anything under hydra) rather than applying it afterwards."""
        if touches_hydra(override):
            return True
        return not isinstance(override.value(), dict) and self._group_exists(override.key_or_group)

    def _split(self, overrides: Sequence[str]) -> Optional[tuple[tuple, list, list]]:
        """(template key, value overrides, task overrides), or None where no template applies."""
        parsed = self.parser.parse_overrides(list(overrides))
        key, values = [], []
        for o in parsed:
            if o.get_key_element() == "hydra.searchpath":
                return None  # a job that moves the search path changes what a group is
            if not o.is_sweep_override() and self._shapes_config(o):
                key.append(o.input_line)
            else:
                values.append(o)  # a sweep is rejected by compose() with Hydra's own message
        return tuple(key), values, [o for o in parsed if not o.is_hydra_override()]

    def prepare(self, overrides: Sequence[str]) -> Optional[PreparedConfig]:
        """A template for a job with these overrides, or None: the job then composes as usual."""
        try:
            split = self._split(overrides)
        except Exception:  # a malformed override fails in its job, with Hydra's message
            return None
        if split is None:
            return None
        key, values, task = split
        if key not in self.templates:
            if key not in self.seen:
                remember(self.seen, key, None, self.seen_capacity)
                return None
            try:
                base = self.loader.load_sweep_config(self.session.master_config, list(key))
                log.debug("composed a config template for %s", list(key))
            except Exception:  # a bad group choice fails in its job, with Hydra's message
                base = None
            remember(self.templates, key, base, self.capacity)
        base = self.templates[key]
        self.templates.move_to_end(key)
        return None if base is None else PreparedConfig(base=base, value_overrides=values, task_overrides=task)
