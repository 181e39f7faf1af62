"""Workloads: models as ordered lists of layers, built in or loaded from YAML.

``load_workload("resnet50")`` returns a built-in model; ``load_workload("bert-large:128")``
or ``load_workload("bert-large", seq_len=128)`` a transformer at another sequence length;
``load_workload("my-model.yaml")`` a user model (format in ``workloads/README.md``).

The YAML loader (pyyaml, pydantic) is imported only when a file is loaded, so that the
simulator core can import ``workloads.model`` without those packages.
"""

from __future__ import annotations

import difflib
import inspect
import os

from sim.errors import InputError
from workloads.builtin import BUILTIN
from workloads.builtin import names as builtin_names
from workloads.model import Layer, MeasuredTime, Workload

__all__ = [
    "Layer",
    "MeasuredTime",
    "Workload",
    "builtin_names",
    "load_workload",
]

YAML_SUFFIXES = (".yaml", ".yml")


def load_workload(name_or_path: str | os.PathLike[str], **params: object) -> Workload:
    """A built-in workload by name, or a user workload from a .yaml/.yml file.

    A built-in name may carry its sequence length after a colon: ``"bert-large:128"`` is
    ``load_workload("bert-large", seq_len=128)``. ``params`` are passed to the built-in
    factory (``seq_len`` for the transformers, in tokens). Raises InputError for an
    unknown name, a missing file, bad parameters or a bad file.
    """
    text = os.fspath(name_or_path)
    base, colon, arg = text.partition(":")
    if text in BUILTIN or (colon and base in BUILTIN):
        if colon:
            if "seq_len" in params:
                raise InputError(f"sequence length given twice: in {text!r} and as seq_len")
            try:
                params = {**params, "seq_len": int(arg)}
            except ValueError:
                raise InputError(
                    f"{text!r}: expected '{base}:<sequence length in tokens>'"
                ) from None
        return _call_builtin(base if colon else text, params)

    if text.lower().endswith(YAML_SUFFIXES):
        if params:
            raise InputError(
                f"YAML workloads take no parameters, got {', '.join(sorted(params))}", file=text
            )
        if not os.path.lexists(text):
            raise InputError("workload file not found", file=text)
        from workloads.loader import load_yaml

        return load_yaml(text)

    from sim.formats.safe_read import excerpt

    known = builtin_names()
    close = difflib.get_close_matches(base[:200], known, n=3, cutoff=0.6)
    hint = f"did you mean: {', '.join(close)}?" if close else f"built-in: {', '.join(known)}"
    raise InputError(
        f"unknown workload {excerpt(text)}; {hint} (or give a path to a .yaml/.yml file)"
    )


def _call_builtin(name: str, params: dict[str, object]) -> Workload:
    factory = BUILTIN[name]
    accepted = set(inspect.signature(factory).parameters)
    unknown = sorted(set(params) - accepted)
    if unknown:
        takes = ", ".join(sorted(accepted)) if accepted else "no parameters"
        raise InputError(f"workload {name!r} takes {takes}; got {', '.join(unknown)}")
    try:
        return factory(**params)
    except ValueError as exc:
        raise InputError(f"workload {name!r}: {exc}") from None
