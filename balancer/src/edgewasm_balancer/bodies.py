"""Request bodies: reading them within limits, and finding the `model` a JSON body names.

The model is found without building the document and without recursion: a scanner walks the
top-level object's members, skipping nested values by counting brackets outside strings, and yields
to the event loop every few thousand tokens, so a huge or deeply nested body neither stalls other
requests nor raises RecursionError. It reads only as far as it needs: a body whose `model` comes
first costs a few microseconds.
"""

from __future__ import annotations

import asyncio
import json
import re

# A JSON string (escapes included), a bracket, or a lone quote (an unterminated string).
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]|"')
_MODEL_KEY = b'"model"'
_YIELD_EVERY = 2048  # tokens scanned between two yields to the event loop
SMALL = 64 * 1024  # bodies up to this size are parsed with the json module (C speed, bounded depth)


class UnreadableBodyError(ValueError):
    """The body claims to be JSON but is not: answered 400 with the reason."""


def is_json(body: bytes, content_type: str) -> bool:
    return bool(body) and ("json" in content_type or body.lstrip()[:1] == b"{")


def _model_of(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _small_model(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except RecursionError:
        raise UnreadableBodyError("the JSON body is nested too deeply") from None
    except UnicodeDecodeError:
        raise UnreadableBodyError("the JSON body is not valid UTF-8") from None
    except ValueError as exc:
        raise UnreadableBodyError(f"the body is not valid JSON: {exc}") from None
    return _model_of(data.get("model")) if isinstance(data, dict) else None


def _value_after_key(body: bytes, end: int) -> int | None:
    """Offset of the value if the string that ends at `end` is an object key (followed by ':')."""
    length = len(body)
    while end < length and body[end] in b" \t\r\n":
        end += 1
    if end >= length or body[end] != 0x3A:  # ':'
        return None
    end += 1
    while end < length and body[end] in b" \t\r\n":
        end += 1
    return end


def _decode_model(body: bytes, start: int) -> str | None:
    match = _TOKEN.match(body, start)
    if match is None or match.group() == b'"' or body[start] != 0x22:
        return None  # a non-string model: not ours to route on
    try:
        return _model_of(json.loads(match.group()))
    except (ValueError, UnicodeDecodeError):
        raise UnreadableBodyError("the JSON body's model is not a valid string") from None


async def requested_model(body: bytes | None, content_type: str) -> str | None:
    """The `model` a JSON request body names, if any. Raises UnreadableBodyError for broken JSON."""
    if not body or not is_json(body, content_type):
        return None
    if len(body) <= SMALL:
        return _small_model(body)
    start = len(body) - len(body.lstrip())
    if body[start] != 0x7B:  # '{': only an object has a model
        return None
    return await _scan_members(body, start)


async def _scan_members(body: bytes, start: int) -> str | None:
    """Walk the object at `start` token by token; the value of its top-level `model` key."""
    depth = 0
    for count, match in enumerate(_TOKEN.finditer(body, start), 1):
        token = match.group()
        if token[0] == 0x22:  # '"'
            if len(token) == 1:
                raise UnreadableBodyError("the JSON body has an unterminated string")
            if depth == 1 and token == _MODEL_KEY and (value := _value_after_key(body, match.end())):
                return _decode_model(body, value)
        else:
            depth += 1 if token in (b"{", b"[") else -1
            if depth == 0:
                return _closed(body, match.end())
        if count % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
    raise UnreadableBodyError("the JSON body ends before its last bracket is closed")


def _closed(body: bytes, end: int) -> None:
    """The top-level object closed at `end` without a model: check that nothing follows."""
    if body[end:].strip():
        raise UnreadableBodyError("the JSON body has data after its end")


class BufferBudget:
    """A global cap on request bytes buffered at once, shared by every request."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size
