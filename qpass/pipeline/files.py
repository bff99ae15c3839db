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
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import PipelineError
from qpass.pipeline.manager import Pipeline, Repeat
from qpass.pipeline.pass_base import Pass
from qpass.pipeline.registry import get_pass_class


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
    raise PipelineError(f"{where}: each pass is a name or a one-key mapping {{name: {{options}}}}, got {entry!r}")


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


def load_pipeline(name_or_path: str | Path, overrides: dict[str, dict] | None = None) -> Pipeline:
    """A built-in pipeline by name, or a YAML pipeline file by path."""
    text: str
    where = str(name_or_path)
    if str(name_or_path) in builtin_pipelines():
        text = resources.files("qpass.pipeline.builtin").joinpath(f"{name_or_path}.yaml").read_text()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise PipelineError(
                f"no pipeline {where!r}: not a built-in ({', '.join(builtin_pipelines())}) and not a file"
            )
        text = path.read_text()
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise PipelineError(f"pipeline {where} is not valid YAML{at}") from None
    return pipeline_from_dict(spec, where, overrides)
