"""Readers for untrusted files (Hub bundles) that bound size and nesting depth BEFORE parsing.

`json.loads` and `tomllib.loads` recurse once per nesting level, so a document nested 100k deep raises
`RecursionError`; a 50 MB document is parsed in full before any check could look at it. These readers
stat the file first, read at most the limit, count the nesting depth of the raw bytes (brackets outside
strings and comments) and only then parse. Safetensors files are checked by the `safetensors` library
itself (header type, dtypes, shapes, `data_offsets` that must tile the data exactly), which never recurses
past its own limit. Every refusal is an `InputError` subclass with one line of text.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import struct
import tomllib
from pathlib import Path
from typing import Any

from ..errors import InputError, UnsafeAdapterError

# raw-byte scanners: strings (and TOML comments) are removed before brackets are counted
_JSON_SKIP = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_TOML_SKIP = re.compile(rb'"""[\s\S]*?"""(?!")|\'\'\'[\s\S]*?\'\'\'(?!\')|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN = frozenset(b"[{")


def nesting_depth(raw: bytes, toml: bool = False, stop_above: int | None = None) -> int:
    """The deepest bracket nesting of a JSON (or TOML) document, counted on the raw bytes without parsing;
    stops counting once it exceeds `stop_above`."""
    brackets = (_TOML_SKIP if toml else _JSON_SKIP).sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for c in brackets:
        if c in _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        else:
            depth -= 1
    return deepest


def _first_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]


def read_bounded(path: Path, what: str, limit: int) -> bytes:
    """The bytes of `path`, refused (before reading) when it is larger than `limit`."""
    size = os.stat(path).st_size
    if size > limit:
        raise InputError(f"{what} is {size} bytes, over the {limit}-byte limit")
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{what} is over the {limit}-byte limit")
    return data


def loads_json(data: bytes, what: str, max_depth: int) -> Any:
    """Parse JSON bytes whose nesting was checked first (no RecursionError; NaN and Infinity parse, as the
    registry's own JSON writer emits them)."""
    if nesting_depth(data, stop_above=max_depth) > max_depth:
        raise InputError(f"{what} is nested deeper than {max_depth} levels")
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, 5000-digit integers
        raise InputError(f"{what} is not valid JSON ({_first_line(e)})") from None


def load_json(path: Path, what: str, limit: int, max_depth: int) -> Any:
    return loads_json(read_bounded(path, what, limit), what, max_depth)


def _datetime_at(data: Any) -> str | None:
    """The dotted path of the first TOML date/time value in `data`, if any (iterative walk)."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, (_dt.date, _dt.time)):  # datetime is a date
            return where or "(top level)"
        if isinstance(value, dict):
            stack += [(f"{where}.{k}" if where else str(k), v) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(f"{where}[{i}]", v) for i, v in enumerate(value)]
    return None


def load_toml_text(path: Path, what: str, limit: int, max_depth: int) -> str:
    """The text of a TOML file after checking size, depth, syntax and that it holds no dates or times."""
    data = read_bounded(path, what, limit)
    if nesting_depth(data, toml=True, stop_above=max_depth) > max_depth:
        raise InputError(f"{what} is nested deeper than {max_depth} levels")
    try:
        text = data.decode("utf-8")
        parsed = tomllib.loads(text)
    except (ValueError, RecursionError) as e:  # TOMLDecodeError, UnicodeDecodeError, huge ints
        raise InputError(f"{what} is not valid TOML ({_first_line(e)})") from None
    where = _datetime_at(parsed)
    if where is not None:
        raise InputError(f"{what} holds a TOML date/time value at {where} (only strings, numbers, booleans, "
                         "arrays and tables are allowed)")
    return text


def check_safetensors(path: Path, what: str, limit: int, header_limit: int, max_depth: int) -> None:
    """Refuse a file that is not a well-formed safetensors file: the header (an object of tensors with dtype,
    shape and `data_offsets` that tile the data exactly, plus an optional string `__metadata__`) is checked
    by the `safetensors` library; length, size and nesting are bounded here first."""
    from safetensors import SafetensorError, safe_open

    size = os.stat(path).st_size
    if size > limit:
        raise UnsafeAdapterError(f"{what} is {size} bytes, over the {limit}-byte limit")
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise UnsafeAdapterError(f"{what} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, header_limit):
            raise UnsafeAdapterError(f"{what} is not a safetensors file (header length {n} does not fit the "
                                     f"file or the {header_limit}-byte limit)")
        header = f.read(n)
    if nesting_depth(header, stop_above=max_depth) > max_depth:
        raise UnsafeAdapterError(f"{what} has a safetensors header nested deeper than {max_depth} levels")
    try:
        with safe_open(str(path), framework="numpy") as st:
            names = list(st.keys())
    except (SafetensorError, OSError, ValueError) as e:
        raise UnsafeAdapterError(f"{what} is not a valid safetensors file ({_first_line(e)})") from None
    if not names:
        raise UnsafeAdapterError(f"{what} holds no tensors")


def json_size(obj: Any) -> int:
    """Bytes of `obj` as compact JSON (TypeError for values JSON cannot hold)."""
    return len(json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode())
