"""Reading input files that may be hostile: the one place a file given by a user is
opened, and the one YAML and JSON loader every reader uses.

A file must be a regular file (a FIFO would block forever, ``/dev/zero`` never ends),
no larger than its reader's cap, and UTF-8. YAML is parsed with a depth cap (PyYAML's
composer recurses), a cap on the nodes aliases expand to (a "billion laughs" document
is a few hundred bytes), and duplicate keys refused (YAML's last-one-wins would hide a
typo). JSON gets the same depth cap. Every refusal is one :class:`InputError` naming the
file, the key where there is one, and the limit; it quotes at most a short excerpt of
the input (:func:`excerpt`).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from typing import Any

from sim.errors import InputError

MIB = 1 << 20
# Caps on what one input file may hold. Profiles, workloads and sweep specs are written
# by hand or by calibration (the largest we write is tens of KiB); traces hold a
# measured run's spans (a million spans is about 70 MiB of JSON).
YAML_MAX_BYTES = 8 * MIB
JSON_MAX_BYTES = 256 * MIB
MAX_DEPTH = 64  # nesting of mappings and lists (a profile needs 4)
MAX_ALIAS_EXPANSION = 100_000  # nodes a YAML document may expand to through aliases
EXCERPT_CHARS = 60


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters (with how much was cut), never
    walking more of a huge or deeply nested value than it needs to."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        text = repr(value[:limit])
        return f"{text[:-1]}...{text[-1]} ({len(value):,} characters)"
    if isinstance(value, (dict, list, tuple, set)):
        return f"<a {type(value).__name__} of {len(value):,} entries>"
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        return f"<a {type(value).__name__}>"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def _describe(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _open_error(err: OSError, file: str, what: str) -> InputError:
    if err.errno == errno.ENOENT:
        return InputError("file not found", file=file)
    if err.errno == errno.ENAMETOOLONG:
        return InputError(
            f"the file name is too long for the file system ({len(file):,} characters)",
            file=f"{file[:80]}...",
        )
    if err.errno == errno.EISDIR:
        return InputError(f"is a folder, not {what}", file=file)
    if err.errno == errno.ELOOP:
        return InputError("a loop of symbolic links", file=file)
    return InputError(f"cannot read: {err.strerror or err}", file=file)


def read_input_bytes(
    path: str | os.PathLike[str], *, max_bytes: int, what: str = "a file", head: int = 0
) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``max_bytes``
    (only its first ``head`` bytes if ``head`` > 0). Never blocks on a FIFO or reads
    without end from a device: the type is checked before opening, and again on the
    open descriptor (opened non-blocking)."""
    file = os.fspath(path)
    try:
        st = os.stat(file)
    except OSError as err:
        raise _open_error(err, file, what) from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"is a folder, not {what}", file=file)
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"is {_describe(st.st_mode)}, not {what}", file=file)
    if st.st_size > max_bytes:
        raise InputError(
            f"is {st.st_size / MIB:,.1f} MiB; {what} may be at most {max_bytes / MIB:g} MiB",
            file=file,
        )
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise _open_error(err, file, what) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since the stat above
            raise InputError(f"is not a regular file, not {what}", file=file)
        chunks = []
        size = 0
        while not (head and size >= head):
            chunk = os.read(fd, min(MIB, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise InputError(
                    f"grew past {max_bytes / MIB:g} MiB while being read; {what} may be at "
                    f"most {max_bytes / MIB:g} MiB",
                    file=file,
                )
    except OSError as err:
        raise _open_error(err, file, what) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return data[:head] if head else data


def read_input_text(path: str | os.PathLike[str], *, max_bytes: int, what: str = "a file") -> str:
    """:func:`read_input_bytes` decoded as UTF-8 (a byte-order mark is dropped)."""
    data = read_input_bytes(path, max_bytes=max_bytes, what=what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(
            f"cannot read file: it is not text (UTF-8): {err.reason} at byte {err.start:,}",
            file=os.fspath(path),
        ) from None


# -- YAML ------------------------------------------------------------------------------------
def _yaml_loader() -> type:
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[valid-type, misc]
        """SafeLoader that refuses a key given twice in one mapping."""

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, Any] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.get(key)
                    except TypeError:
                        continue  # an unhashable key: the constructor says so below
                    if first is not None:
                        raise _DuplicateKey(key, key_node.start_mark, first)
                    seen[key] = key_node.start_mark
            return super().construct_mapping(node, deep=deep)

    return Loader


class _DuplicateKey(Exception):
    def __init__(self, key: Any, mark: Any, first: Any):
        super().__init__(key)
        self.key, self.mark, self.first = key, mark, first


def _check_yaml_shape(text: str, file: str) -> None:
    """Walk the event stream (iterative: no recursion) before anything is composed:
    nesting depth, and how many nodes the aliases would expand the document to."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    depth = 0
    sizes: list[int] = [0]  # expanded node count of each open collection
    anchors: dict[str, int] = {}
    through_aliases = 0  # nodes the aliases add
    pending: list[str | None] = []  # anchor of each open collection
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise InputError(
                    f"nested more than {MAX_DEPTH} levels deep (at line {line})", file=file
                )
            sizes.append(1)
            pending.append(event.anchor)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
            size = sizes.pop()
            anchor = pending.pop()
            if anchor is not None:
                anchors[anchor] = size
            sizes[-1] += size
        elif isinstance(event, yaml.ScalarEvent):
            sizes[-1] += 1
            if event.anchor is not None:
                anchors[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            size = anchors.get(event.anchor, 1)
            sizes[-1] += size
            through_aliases += size
            if through_aliases > MAX_ALIAS_EXPANSION:
                raise InputError(
                    f"its aliases (*name) expand it by more than {MAX_ALIAS_EXPANSION:,} "
                    "values; write the values out, or use fewer aliases",
                    file=file,
                )


def load_yaml_text(text: str, file: str) -> Any:
    """Parse YAML with the checks above; InputError (file, line, short reason) on any
    problem."""
    import yaml

    try:
        _check_yaml_shape(text, file)
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as dup:
        lines = [f"line {m.line + 1}" for m in (dup.first, dup.mark) if m is not None]
        raise InputError(
            f"given twice (at {' and '.join(lines)}); YAML would keep only the last",
            file=file,
            key=excerpt(str(dup.key), 40).strip("'"),
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        problem = excerpt(problem, 120)[1:-1]
        raise InputError(f"malformed YAML{where}: {problem}", file=file) from None
    except RecursionError:
        raise InputError(f"nested more than {MAX_DEPTH} levels deep", file=file) from None


def read_yaml(path: str | os.PathLike[str], *, max_bytes: int = YAML_MAX_BYTES) -> Any:
    """A YAML file, read safely (:func:`read_input_text`) and parsed safely."""
    file = os.fspath(path)
    text = read_input_text(path, max_bytes=max_bytes, what="a YAML file")
    return load_yaml_text(text, file)


# -- JSON ------------------------------------------------------------------------------------
def _depth_exceeds(doc: Any, limit: int) -> bool:
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def load_json_text(text: str, file: str) -> Any:
    """Parse JSON; InputError if malformed or nested more than :data:`MAX_DEPTH` deep."""
    try:
        doc = json.loads(text)
    except RecursionError:
        raise InputError(f"nested more than {MAX_DEPTH} levels deep", file=file) from None
    except json.JSONDecodeError as err:
        raise InputError(
            f"not JSON: {err.msg} at line {err.lineno}, column {err.colno}", file=file
        ) from None
    if _depth_exceeds(doc, MAX_DEPTH):
        raise InputError(f"nested more than {MAX_DEPTH} levels deep", file=file)
    return doc


def read_json(path: str | os.PathLike[str], *, max_bytes: int = JSON_MAX_BYTES) -> Any:
    """A JSON file, read safely and parsed with a depth cap."""
    file = os.fspath(path)
    return load_json_text(read_input_text(path, max_bytes=max_bytes, what="a JSON file"), file)


def is_regular_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a regular file (following symlinks); never opens it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


__all__ = [
    "excerpt",
    "is_regular_file",
    "load_json_text",
    "load_yaml_text",
    "read_input_bytes",
    "read_input_text",
    "read_json",
    "read_yaml",
]
