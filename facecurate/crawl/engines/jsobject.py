"""Read a JavaScript object literal embedded in a page (Naver's ``var imageSearchTabData = {...}``).

It is not strict JSON: bare keys, single-quoted strings, ``\\x`` escapes, trailing commas, comments, ``!0``
and ``undefined`` all occur in minified pages. A small tokenizer rewrites those into JSON rather than
running a JavaScript engine; anything it cannot read raises :class:`~facecurate.crawl.engines.base.LayoutError`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from facecurate.crawl.engines.base import LayoutError

_IDENT = re.compile(r"[A-Za-z_$][\w$]*")
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_LITERALS = {"true": "true", "false": "false", "null": "null", "undefined": "null", "NaN": "null",
             "Infinity": "null"}


def find_assignment(text: str, name: str) -> str:
    """The ``{...}`` source assigned to ``name`` (``var name = {...}`` or ``name: {...}``). Pure."""
    m = re.search(rf"\b{re.escape(name)}\s*[=:]\s*\{{", text)
    if m is None:
        raise LayoutError(f"no `{name} = {{...}}` in the page")
    start = m.end() - 1
    depth, i, quote = 0, start, ""
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
        i += 1
    raise LayoutError(f"`{name}` object is not closed (truncated page?)")


def _string(src: str, i: int) -> tuple[str, int]:
    quote, out, i = src[i], [], i + 1
    while i < len(src):
        ch = src[i]
        if ch == "\\" and i + 1 < len(src):
            nxt = src[i + 1]
            if nxt == "x" and i + 3 < len(src):
                out.append(chr(int(src[i + 2:i + 4], 16)))
                i += 4
                continue
            if nxt == "u" and i + 5 < len(src):
                out.append(chr(int(src[i + 2:i + 6], 16)))
                i += 6
                continue
            out.append({"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "0": "\0"}.get(nxt, nxt))
            i += 2
            continue
        if ch == quote:
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise LayoutError("unterminated string in the JavaScript object")


def to_json(src: str) -> str:
    """Rewrite a JavaScript object literal as JSON text. Pure."""
    out: list[str] = []
    i = 0
    try:
        while i < len(src):
            ch = src[i]
            if ch.isspace():
                i += 1
            elif src.startswith("//", i):
                i = src.find("\n", i) if src.find("\n", i) >= 0 else len(src)
            elif src.startswith("/*", i):
                end = src.find("*/", i + 2)
                i = len(src) if end < 0 else end + 2
            elif ch in "\"'`":
                value, i = _string(src, i)
                out.append(json.dumps(value, ensure_ascii=False))
            elif ch in "{[:":
                out.append(ch)
                i += 1
            elif ch in "}]":
                if out and out[-1] == ",":
                    out.pop()  # trailing comma
                out.append(ch)
                i += 1
            elif ch == ",":
                out.append(ch)
                i += 1
            elif src.startswith("!0", i) or src.startswith("!1", i):
                out.append("true" if src[i + 1] == "0" else "false")
                i += 2
            elif (m := _NUMBER.match(src, i)) is not None:
                out.append(json.dumps(float(m.group()) if any(c in m.group() for c in ".eE") else int(m.group())))
                i = m.end()
            elif (m := _IDENT.match(src, i)) is not None:
                word = m.group()
                j = m.end()
                while j < len(src) and src[j].isspace():
                    j += 1
                is_key = j < len(src) and src[j] == ":" and out and out[-1] in ("{", ",")
                out.append(json.dumps(word) if is_key else _LITERALS.get(word, "null"))
                i = m.end()
            else:
                raise LayoutError(f"unexpected {ch!r} at {i} in the JavaScript object")
    except (ValueError, IndexError) as exc:
        if isinstance(exc, LayoutError):
            raise
        raise LayoutError(f"unreadable JavaScript object ({exc})") from exc
    return "".join(out)


def parse_object(text: str, name: str) -> Any:
    """Find ``name = {...}`` in ``text`` and return it as Python data. Pure."""
    source = to_json(find_assignment(text, name))
    try:
        return json.loads(source)
    except (ValueError, RecursionError) as exc:  # nested past the parser's limit too
        raise LayoutError(f"`{name}` is not a readable object ({str(exc)[:200]})") from None
