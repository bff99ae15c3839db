"""Named pipelines (YAML files shipped in qpass/pipelines/) and pipeline files written by users.

Format::

    name: default
    description: what it does
    passes:
      - normalize                      # a pass with default options
      - calibrate: {method: minmax}    # a pass with options
      - repeat:                        # a group run to a fixed point
          max_iter: 10
          passes: [fold_batchnorm, ...]

Files are read with bounds, so a hostile one fails fast with a short message: at most ``MAX_FILE_BYTES``, nesting
at most ``MAX_DEPTH`` levels deep, and at most ``MAX_NODES`` YAML nodes once aliases are expanded (a "billion
laughs" file names a handful of nodes that expand to billions).
"""
from __future__ import annotations

import copy
import functools
import reprlib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import PipelineError
from qpass.pipeline.manager import Pipeline, Repeat
from qpass.pipeline.pass_base import Pass
from qpass.pipeline.registry import get_pass_class

MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 50
MAX_NODES = 10_000


def _short(value: Any) -> str:
    """A repr of YAML content short enough for a one-line message."""
    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother = 3, 40, 40
    r.maxlist = r.maxdict = r.maxtuple = 4
    return r.repr(value)[:160]


def builtin_pipelines() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("qpass.pipeline.builtin").iterdir() if p.name.endswith(".yaml"))


def _make_pass(entry: Any, where: str) -> Pass:
    if isinstance(entry, str):
        return get_pass_class(entry)()
    if isinstance(entry, dict) and len(entry) == 1:
        (name, opts), = entry.items()
        opts = opts or {}
        if not isinstance(opts, dict):
            raise PipelineError(f"{where}: options of pass {name!r} must be a mapping")
        return get_pass_class(name)(**opts)
    raise PipelineError(f"{where}: each pass is a name or a one-key mapping {{name: {{options}}}}, got {_short(entry)}")


def _make_step(entry: Any, where: str):
    if isinstance(entry, dict) and len(entry) == 1 and "repeat" in entry:
        spec = entry["repeat"] or {}
        if not isinstance(spec, dict) or not isinstance(spec.get("passes"), list):
            raise PipelineError(f"{where}: 'repeat' needs a 'passes' list")
        max_iter = spec.get("max_iter", 20)
        if not isinstance(max_iter, int) or max_iter < 1:
            raise PipelineError(f"{where}: repeat max_iter must be a positive integer")
        return Repeat([_make_pass(e, where) for e in spec["passes"]], max_iter=max_iter)
    return _make_pass(entry, where)


def pipeline_from_dict(spec: Any, where: str = "pipeline", overrides: dict[str, dict] | None = None) -> Pipeline:
    if not isinstance(spec, dict) or not isinstance(spec.get("passes"), list) or not spec["passes"]:
        raise PipelineError(f"{where}: a pipeline is a mapping with a non-empty 'passes' list")
    entries = spec["passes"]
    if overrides:
        entries = [_apply_override(e, overrides) for e in entries]
    steps = [_make_step(e, where) for e in entries]
    return Pipeline(str(spec.get("name", where)), steps, str(spec.get("description", "")))


def _apply_override(entry: Any, overrides: dict[str, dict]) -> Any:
    """Merge option overrides (e.g. from CLI flags) into the entries of the named passes."""
    if isinstance(entry, str):
        return {entry: dict(overrides[entry])} if entry in overrides else entry
    if isinstance(entry, dict) and len(entry) == 1:
        (name, opts), = entry.items()
        if name == "repeat":
            spec = dict(opts or {})
            spec["passes"] = [_apply_override(e, overrides) for e in spec.get("passes", [])]
            return {"repeat": spec}
        if name in overrides:
            return {name: {**(opts or {}), **overrides[name]}}
    return entry


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing documents nested deeper than MAX_DEPTH while it composes them."""

    def __init__(self, stream, where: str):
        super().__init__(stream)
        self.where, self.depth = where, 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise PipelineError(f"pipeline {self.where} nests deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _expanded_size(node: yaml.Node, memo: dict[int, int], where: str) -> int:
    """How many nodes ``node`` stands for once every alias is expanded (each anchored node counted once per use)."""
    if id(node) not in memo:
        if isinstance(node, yaml.SequenceNode):
            size = 1 + sum(_expanded_size(c, memo, where) for c in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(_expanded_size(k, memo, where) + _expanded_size(v, memo, where) for k, v in node.value)
        else:
            size = 1
        if size > MAX_NODES:
            raise PipelineError(f"pipeline {where} expands to more than {MAX_NODES} YAML nodes (aliases "
                                "referring to aliases)")
        memo[id(node)] = size
    return memo[id(node)]


def parse_yaml(text: str, where: str) -> Any:
    """A YAML document with bounded nesting and alias expansion (PipelineError otherwise)."""
    loader = _BoundedLoader(text, where)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, where)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise PipelineError(f"pipeline {where} is not valid YAML{at}") from None
    finally:
        loader.dispose()


def _read_file(path: Path, where: str) -> str:
    if not path.is_file():
        raise PipelineError(
            f"no pipeline {where!r}: not a built-in ({', '.join(builtin_pipelines())}) and not a file"
        )
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise PipelineError(f"pipeline {where} is larger than {MAX_FILE_BYTES >> 20} MiB")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise PipelineError(f"pipeline {where} is not UTF-8 text") from None
    except OSError as exc:
        raise PipelineError(f"cannot read pipeline {where}: {exc.strerror or type(exc).__name__}") from None


def load_pipeline(name_or_path: str | Path, overrides: dict[str, dict] | None = None) -> Pipeline:
    """A built-in pipeline by name, or a YAML pipeline file by path."""
    where = str(name_or_path)
    if where in builtin_pipelines():
        text = resources.files("qpass.pipeline.builtin").joinpath(f"{where}.yaml").read_text()
        # a built-in is parsed once per text (11 ms of mtcnn-pnet's 0.26 s quantize); each call gets its own copy
        return pipeline_from_dict(copy.deepcopy(_parsed_builtin(text, where)), where, overrides)
    text = _read_file(Path(name_or_path), where)
    return pipeline_from_dict(parse_yaml(text, where), where, overrides)


@functools.lru_cache(maxsize=32)
def _parsed_builtin(text: str, where: str) -> Any:
    """``parse_yaml`` of a built-in pipeline's text (cached: the key is the text itself, so an edited file is
    parsed again)."""
    return parse_yaml(text, where)
