"""File formats: Trace to CSV and to Chrome trace JSON (opens in Perfetto), written
atomically (a temporary file in the same folder, then a rename)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from sim.engine.trace import SPAN_FIELDS, Trace
from sim.errors import InputError


def check_writable(path: str | Path) -> Path:
    """Fail early, before any work, if ``path`` cannot be written as a file."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        if not folder.is_dir():
            raise InputError("the folder to write into does not exist", file=str(path))
        if path.is_dir():
            raise InputError("is a folder; give a file name to write", file=str(path))
    except OSError as err:  # a name too long, a loop of links
        raise InputError(f"cannot write here: {err.strerror or err}", file=str(path)) from None
    if not os.access(folder, os.W_OK):
        raise InputError("the folder is not writable", file=str(path))
    return folder


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (an output that would overwrite an input or
    another output), whether or not it exists yet."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return False


def check_distinct_outputs(outputs: dict[str, str | None], inputs: tuple[str, ...] = ()) -> None:
    """Refuse, before any work, two outputs on one path (``--csv x --chrome-trace x``)
    or an output onto an input (``--workload w.yaml --csv w.yaml``): each would silently
    replace the other. ``outputs``: option name -> path (None: not given)."""
    given = [(flag, path) for flag, path in outputs.items() if path]
    for i, (flag, path) in enumerate(given):
        for other_flag, other in given[i + 1 :]:
            if same_file(path, other):
                raise InputError(f"{flag} and {other_flag} name the same file", file=path)
        for source in inputs:
            if source and os.path.exists(source) and same_file(path, source):
                raise InputError(f"{flag} would overwrite an input file", file=path)


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
        # On disk before the rename, so a crash leaves the old file, never an empty one.
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
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


def json_text(doc: Any, **options: Any) -> str:
    """``doc`` as standard JSON (RFC 8259 has no NaN or Infinity), for every JSON document
    dtsim prints or writes. A NaN or an infinity becomes null (a diverged loss, a figure
    that has no finite value); ``options`` go to :func:`json.dumps`."""
    try:
        return json.dumps(doc, allow_nan=False, **options)
    except ValueError:
        return json.dumps(_finite(doc), allow_nan=False, **options)


def _finite(value: Any) -> Any:
    if isinstance(value, Real) and not isinstance(value, Integral):  # floats, numpy's too
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# -- a CSV streamed row by row (a sweep's table, calibration samples) -----------------------
def complete_csv_prefix(data: bytes) -> int:
    """How many leading bytes of ``data`` are whole CSV records: up to the last newline
    that is not inside a quoted field (a row cut by a full disk or a kill is dropped)."""
    end = len(data)
    while True:
        cut = data.rfind(b"\n", 0, end)
        if cut < 0:
            return 0
        # Quotes are doubled inside quoted fields, so an even count means the newline
        # ends a record.
        if data.count(b'"', 0, cut) % 2 == 0:
            return cut + 1
        end = cut


def truncate_to_complete_rows(path: str | Path) -> int:
    """Cut ``path`` back to its last complete CSV row, in place; returns the bytes
    dropped (0 if it was whole or does not exist)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror or err}", file=str(path)) from None
    keep = complete_csv_prefix(data)
    if keep == len(data):
        return 0
    try:
        os.truncate(path, keep)
    except OSError as err:
        raise InputError(f"cannot repair: {err.strerror or err}", file=str(path)) from None
    return len(data) - keep


class CsvAppender:
    """Rows appended to a CSV as they come, each flushed and fsynced, so a run stopped by
    a kill or a full disk leaves whole rows and at most one cut row (dropped by
    :func:`truncate_to_complete_rows` on resume). A write that fails is one
    :class:`InputError` naming the file."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        try:
            self.file = open(path, "a", newline="")  # noqa: SIM115 (closed by close())
        except OSError as err:
            raise InputError(f"cannot write: {err.strerror or err}", file=self.path) from None
        self.writer = csv.writer(self.file, lineterminator="\n")

    def write(self, row: list) -> None:
        self.write_rows([row])

    def write_rows(self, rows: list[list]) -> None:
        """``rows`` appended with one fsync (a calibration repeat's samples at once)."""
        try:
            self.writer.writerows(rows)
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as err:
            raise InputError(
                f"cannot write (a full disk or a file-size limit?): {err.strerror or err}; "
                "the rows written so far are kept for a resume",
                file=self.path,
            ) from None

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass  # what could not be flushed was reported by write()


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
    write_atomic(path, json_text(chrome_trace(trace)))


# -- YAML input, validated by pydantic models: the one reader for every loader -----------
def read_yaml_mapping(path: str | os.PathLike[str]) -> dict:
    """Safely read and load a YAML file whose top level must be a mapping; InputError
    otherwise (:mod:`sim.formats.safe_read`: regular files only, a size cap, no duplicate
    keys, a depth cap)."""
    from sim.formats.safe_read import read_yaml

    file = str(path)
    data = read_yaml(path)
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

    from sim.formats.safe_read import excerpt

    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")  # type: ignore[attr-defined]
    first = errors[0]

    def is_key(p: object) -> bool:  # not one of pydantic's union or validator tags
        return isinstance(p, int) or not (str(p).startswith("function-") or "[" in str(p))

    raw = tuple(first["loc"])
    # An unknown key is the user's, whatever it looks like ('[/]' is a key too).
    tail = raw[-1:] if first["type"] == "extra_forbidden" else ()
    loc = tuple(p for p in raw[: len(raw) - len(tail)] if is_key(p)) + tail
    if not loc:
        loc = ("(top level)",)
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            name = excerpt(str(part), 40).strip("'")
            key += f".{name}" if key else name
    kind = first["type"]
    if kind == "extra_forbidden":
        model = _submodel(root, loc)
        allowed = list(model.model_fields) if model is not None else []  # type: ignore[attr-defined]
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        reason = f"unknown key {excerpt(str(loc[-1]), 40)}"
        reason += f"; did you mean '{close[0]}'?" if close else ""
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
        reason = f"{first['msg']} (got {excerpt(first.get('input'))})"
    if len(errors) > 1:
        more = len(errors) - 1
        reason += f" (and {more} more problem{'s' if more > 1 else ''})"
    return key, reason
