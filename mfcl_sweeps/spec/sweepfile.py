"""Reading a sweep file (YAML or JSON) into dicts and lists that remember their line numbers,
so every later error can say `file:line`."""
from __future__ import annotations

import os
import re
import stat
from typing import Any, Optional

import yaml

from mfcl_sweeps.errors import SweepSpecError
from mfcl_sweeps.spec import limits


class LineDict(dict):
    """A mapping from the file; `line` is where it starts, `key_lines[k]` where key k is."""

    line: Optional[int] = None
    key_lines: dict


class LineList(list):
    """A sequence from the file; `item_lines[i]` is where item i is."""

    line: Optional[int] = None
    item_lines: list


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader (libyaml's parser where installed: pure Python takes seconds per MB), with YAML
    1.2 floats (`1e-3` is a float, not a string) and dates kept as strings. Nesting and alias
    expansion are bounded by `_expanded_size` before anything is constructed."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise SweepSpecError(f"a mapping key must be a scalar, got {key!r}",
                                 file=loader.name, line=line) from None
        if key in out:
            raise SweepSpecError(f"duplicate key (first at line {out.key_lines[key]})",
                                 key=str(key), file=loader.name, line=line)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


def _expanded_size(node: Any, path: str, depth: int = 1, sizes: Optional[dict] = None) -> int:
    """Nodes `node` stands for with every alias expanded; SweepSpecError past the limits (a
    "billion laughs" file, thousands of nested levels)."""
    sizes = {} if sizes is None else sizes
    if depth > limits.MAX_YAML_DEPTH:
        raise SweepSpecError(f"nested more than {limits.MAX_YAML_DEPTH} levels deep", file=path,
                             line=node.start_mark.line + 1)
    if id(node) not in sizes:
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else \
            node.value if isinstance(node, yaml.SequenceNode) else []
        sizes[id(node)] = 1 + sum(_expanded_size(c, path, depth + 1, sizes) for c in children)
        if sizes[id(node)] > limits.MAX_YAML_NODES:
            raise SweepSpecError(f"more than {limits.MAX_YAML_NODES:,} values once its aliases are expanded",
                                 file=path, line=node.start_mark.line + 1)
    return sizes[id(node)]


def _read_text(path: str) -> str:
    """The file's text: a regular file, at most MAX_FILE_BYTES, UTF-8."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise SweepSpecError("cannot read sweep file: not a regular file", file=path)
        if st.st_size > limits.MAX_FILE_BYTES:
            raise SweepSpecError(f"the sweep file has {st.st_size:,} bytes, more than the limit of "
                                 f"{limits.MAX_FILE_BYTES:,}; is it the right file?", file=path)
        with open(path, "rb") as fh:
            data = fh.read(limits.MAX_FILE_BYTES + 1)
        return data.decode("utf-8")
    except OSError as err:
        raise SweepSpecError(f"cannot read sweep file: {err.strerror or err}", file=path) from None
    except UnicodeDecodeError as err:
        raise SweepSpecError(f"cannot read sweep file: not UTF-8 text (byte {err.start})", file=path) from None


def read(path: str) -> Any:
    """The parsed file; SweepSpecError (with the line of a syntax error) if it cannot be read."""
    text = _read_text(path)
    loader = None
    try:
        loader = _Loader(text)
        loader.name = path
        node = loader.get_single_node()
        if node is not None:
            _expanded_size(node, path)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        what = " ".join(str(p) for p in (err.context, err.problem) if p)
        raise SweepSpecError(f"YAML syntax error: {what}", file=path,
                             line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as err:
        raise SweepSpecError(f"YAML error: {str(err).splitlines()[0]}", file=path) from None
    except RecursionError:
        raise SweepSpecError(f"nested more than {limits.MAX_YAML_DEPTH} levels deep", file=path) from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None or data == {} or data == []:
        # Running the one default job for an empty file would hide a wrong path or an unsaved file.
        raise SweepSpecError("the sweep file is empty; give it grid/paired/runs/params, or drop "
                             "hydra.sweeper.sweep_file to sweep only the command line's values", file=path, line=1)
    return data


def line_of(container: Any, key: Any = None) -> Optional[int]:
    """The file line of `container[key]` (or of the container), if it came from a file."""
    if key is not None:
        if isinstance(container, LineDict) and key in container.key_lines:
            return container.key_lines[key]
        if isinstance(container, LineList) and isinstance(key, int) and key < len(container.item_lines):
            return container.item_lines[key]
    return getattr(container, "line", None)
