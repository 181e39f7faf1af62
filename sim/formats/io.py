"""File formats: Trace to CSV and to Chrome trace JSON (opens in Perfetto), written
atomically (a temporary file in the same folder, then a rename)."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sim.engine.trace import SPAN_FIELDS, Trace
from sim.errors import InputError


def check_writable(path: str | Path) -> Path:
    """Fail early, before any work, if ``path`` cannot be written as a file."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError("the folder to write into does not exist", file=str(path))
    if path.is_dir():
        raise InputError("is a folder; give a file name to write", file=str(path))
    if not os.access(folder, os.W_OK):
        raise InputError("the folder is not writable", file=str(path))
    return folder


@contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` for a writer that needs a file name: renamed onto
    ``path`` when the block ends, removed if it fails, so ``path`` is either its old self
    or complete. A full disk or a closed folder becomes one :class:`InputError` naming
    the file. Every output of dtsim goes through here."""
    path = Path(path)
    folder = check_writable(path)
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise InputError(f"cannot write here: {err.strerror}", file=str(path)) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp makes the file 0600; give it the mode a plain open() would (umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as err:
        raise InputError(f"cannot write: {err.strerror or err}", file=str(path)) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text or bytes) to ``path`` through :func:`atomic_target`."""
    with atomic_target(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            with tmp.open("w", newline="") as f:
                f.write(data)


def trace_csv(trace: Trace) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SPAN_FIELDS)
    for s in trace.spans:
        w.writerow([getattr(s, f) for f in SPAN_FIELDS])
    return buf.getvalue()


def chrome_trace(trace: Trace) -> dict:
    """Chrome trace event format ("X" complete events, microseconds): see
    :func:`sim.formats.chrome_trace.chrome_trace`, which puts overlapping spans of one resource
    (non-blocking collectives in flight together in a measured run) on extra threads so
    that events on one thread nest, as the format requires."""
    from sim.formats.chrome_trace import chrome_trace as _chrome_trace

    return _chrome_trace(trace)


def write_csv(trace: Trace, path: str | Path) -> None:
    write_atomic(path, trace_csv(trace))


def write_chrome_trace(trace: Trace, path: str | Path) -> None:
    write_atomic(path, json.dumps(chrome_trace(trace)))


# -- YAML input, validated by pydantic models: the one reader for every loader -----------
def read_yaml_mapping(path: str | os.PathLike[str]) -> dict:
    """Safely load a YAML file whose top level must be a mapping; InputError otherwise."""
    import yaml

    file = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise InputError("file not found", file=file) from None
    except IsADirectoryError:
        raise InputError("is a folder, not a YAML file", file=file) from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read file: {err}", file=file) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(f"malformed YAML{where}: {problem}", file=file) from None
    if data is None:
        raise InputError("the file is empty", file=file)
    if not isinstance(data, dict):
        raise InputError("the top level must be a mapping of keys to values", file=file)
    return data


def _submodel(root: type, loc: tuple) -> type | None:
    """The pydantic model that holds the key at ``loc`` (for 'did you mean')."""
    import typing

    from pydantic import BaseModel

    def models_in(annotation: object) -> list[type]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in typing.get_args(annotation) for m in models_in(arg)]

    model: type | None = root
    for part in loc[:-1]:
        if model is None or not isinstance(part, str):
            continue
        field = model.model_fields.get(part)  # type: ignore[attr-defined]
        if field is None:
            continue
        found = models_in(field.annotation)
        model = found[0] if found else None
    return model


def validation_problem(err: object, root: type) -> tuple[str, str]:
    """(key, reason) for the first problem of a pydantic ValidationError on ``root``.

    A misspelt key shows up both as unknown and as missing: it is reported as unknown,
    with the closest allowed key.
    """
    import difflib

    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")  # type: ignore[attr-defined]
    first = errors[0]
    loc = tuple(
        p
        for p in first["loc"]
        if isinstance(p, int) or not (str(p).startswith("function-") or "[" in str(p))
    )
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    kind = first["type"]
    if kind == "extra_forbidden":
        model = _submodel(root, loc)
        allowed = list(model.model_fields) if model is not None else []  # type: ignore[attr-defined]
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        reason = f"unknown key '{loc[-1]}'" + (f"; did you mean '{close[0]}'?" if close else "")
        if allowed:
            reason += f" (allowed here: {', '.join(allowed)})"
    elif kind == "missing":
        reason = f"missing required key '{loc[-1]}'"
    elif kind in ("model_type", "dict_type"):
        reason = "expected a mapping of keys to values"
    elif kind == "too_short":
        least = (first.get("ctx") or {}).get("min_length", 1)
        reason = "must not be empty" if least <= 1 else f"needs at least {least} entries"
    elif kind == "value_error":
        reason = first["msg"].removeprefix("Value error, ")
    else:
        reason = f"{first['msg']} (got {first.get('input')!r})"
    if len(errors) > 1:
        more = len(errors) - 1
        reason += f" (and {more} more problem{'s' if more > 1 else ''})"
    return key, reason
