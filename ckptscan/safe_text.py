"""Output safety: the one place that decides how a string from a file may reach a terminal or JSON.

Names, metadata, member names, file names and messages quoting them all come from files an
attacker may have written. Printed raw they can clear the screen, set the window title, fake
colours (ESC and C1 sequences), reorder what the reader sees (bidi overrides), break a "one
line" error (newlines), crash the encoder (lone surrogates) or, on a rich terminal, be read as
markup (``[link=...]``, ``[/]``). Every renderer passes such strings through one of:

- :func:`clean`: visible escapes (``\\x1b``, ``\\u202e``, ``\\ud800``) for every character in
  :data:`UNSAFE`; text stays one line. Used for plain text (error lines, CSV, TSV, rich ``Text``).
- :func:`markup`: :func:`clean`, then rich's markup escape, for strings placed inside rich markup
  (table cells, f-strings with ``[dim]``).
- :func:`json_text`: JSON text whose *values* are unchanged but which contains no raw
  control, bidi or surrogate character (``\\uXXXX`` escapes), so it is valid UTF-8 and harmless
  on a terminal. :func:`capped` bounds the nesting depth of file-derived values first.

Benign text passes through unchanged (the common case costs one regex search).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

# C0 controls (tab and newline included: one string, one line), DEL, C1 controls, the bidi
# embeddings/overrides/isolates and marks, line/paragraph separators, the BOM / zero-width no-break
# space, and lone surrogates (which cannot be encoded as UTF-8 at all).
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")

# what JSON text must still escape after json.dumps(ensure_ascii=False), which escapes only C0,
# the quote and the backslash itself
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")

# file-derived values (metadata, attributes) deeper than this are cut with a marker
MAX_DEPTH = 64
DEPTH_MARKER = "<nested deeper than 64 levels: cut>"


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: str) -> str:
    """``text`` with every unsafe character replaced by a visible escape (``\\x1b``, ``\\u202e``)."""
    if UNSAFE.search(text) is None:
        return text
    return UNSAFE.sub(_escape, text)


def markup(text: str) -> str:
    """``text`` ready to be placed inside rich markup: cleaned, and ``[tag]`` look-alikes escaped."""
    from rich.markup import escape

    return escape(clean(text))


def safe(value: object) -> str:
    """:func:`markup` of ``str(value)``: for a table cell that may hold a name or a number."""
    return markup(value if isinstance(value, str) else str(value))


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def json_text(value: Any, **dumps: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, **dumps)`` with the characters a terminal or a UTF-8
    encoder cannot take escaped as ``\\uXXXX`` (valid JSON; a parser gets the same string back).

    They can only occur inside JSON strings, where a ``\\uXXXX`` escape means the same character."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, **dumps)
    except ValueError:  # NaN or Infinity somewhere: not JSON; write them as strings, as jsonable does
        text = json.dumps(_finite(value), ensure_ascii=False, allow_nan=False, **dumps)
    return escape_json(text)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def escape_json(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with unsafe characters escaped."""
    if _JSON_UNSAFE.search(text) is None:
        return text
    return _JSON_UNSAFE.sub(_json_escape, text)


def capped(value: Any, depth: int = 0) -> Any:
    """``value`` (JSON-like: dicts, lists, scalars) with containers deeper than :data:`MAX_DEPTH`
    replaced by :data:`DEPTH_MARKER`; iterative callers get no RecursionError on hostile nesting."""
    if isinstance(value, Mapping):
        if depth >= MAX_DEPTH:
            return DEPTH_MARKER
        return {k: capped(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if depth >= MAX_DEPTH:
            return DEPTH_MARKER
        return [capped(v, depth + 1) for v in value]
    return value


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests containers deeper than ``limit`` (iterative: any depth is safe)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
