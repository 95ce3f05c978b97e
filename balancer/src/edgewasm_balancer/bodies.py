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

# A JSON string (escapes included), a bracket, or a lone quote (an unterminated string): used to read
# the model's value. Scanning uses _STRUCTURE and bytes.find, which run at memchr speed even through
# a 15 MiB prompt string (one regex match over it would block the loop for 150 ms).
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]|"')
_STRUCTURE = re.compile(rb'[\[\]{}"]')
_MODEL_KEY = b'"model"'
_YIELD_EVERY = 2048  # tokens scanned between two yields to the event loop
MAX_TOKENS = 1_000_000  # tokens scanned at most per body (about a second of CPU)
SMALL = 64 * 1024  # bodies up to this size are parsed with the json module (C speed, bounded depth)


class UnreadableBodyError(ValueError):
    """The body claims to be JSON but is not: answered 400 with the reason."""


def is_json(body: bytes, content_type: str) -> bool:
    return bool(body) and ("json" in content_type or body.lstrip()[:1] == b"{")


def _model_of(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


DUPLICATE_MODEL = "the JSON body names its model twice (llama-api-server refuses a duplicate field too)"


def _small_model(body: bytes) -> str | None:
    models_per_object: list[int] = []

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        # Called for every object, innermost first: the last call is the top-level object.
        models_per_object.append(sum(1 for key, _value in items if key == "model"))
        return dict(items)

    # A key can only be "model" twice when the text says "model" twice, spells a key with \u escapes, or is
    # UTF-16/32 (NUL bytes): the pairs hook (twice the parse time) is needed for those bodies only.
    # (Single-byte searches are memchr; a two-byte one is ten times slower: it runs only when a backslash is there.)
    escaped = b"\\" in body and b"\\u" in body
    plain = b"\0" not in body and not escaped and body.count(b'"model"') <= 1
    hook = None if plain else pairs
    try:
        data = json.loads(body, object_pairs_hook=hook)
    except RecursionError:
        raise UnreadableBodyError("the JSON body is nested too deeply") from None
    except UnicodeDecodeError:
        raise UnreadableBodyError("the JSON body is not valid UTF-8") from None
    except ValueError as exc:
        raise UnreadableBodyError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        return None
    if models_per_object and models_per_object[-1] > 1:
        raise UnreadableBodyError(DUPLICATE_MODEL)
    return _model_of(data.get("model"))


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


class ModelNotInPrefixError(UnreadableBodyError):
    """A body too large to buffer whose first bytes do not name its model: it cannot be routed."""


async def requested_model(body: bytes | None, content_type: str, complete: bool = True) -> str | None:
    """The `model` a JSON request body names, if any.

    A body declared JSON (its Content-Type) that cannot be read raises UnreadableBodyError; a body that
    only looks like JSON (starts with '{') is read as far as possible and gives None when it cannot be.
    With ``complete`` false, ``body`` is the first part of a body too large to buffer: its model must be in
    it (ModelNotInPrefixError otherwise, for a body declared JSON)."""
    if not body or not is_json(body, content_type):
        return None
    try:
        if complete and len(body) <= SMALL:
            return _small_model(body)
        start = len(body) - len(body.lstrip())
        if body[start] != 0x7B:  # '{': only an object has a model
            return None
        return await _scan_members(body, start, complete)
    except UnreadableBodyError:
        if "json" in content_type:
            raise
        return None


def _escaped(body: bytes, quote: int) -> bool:
    """Whether the quote at ``quote`` is escaped (an odd number of backslashes before it)."""
    backslashes = 0
    while body[quote - 1 - backslashes] == 0x5C:  # '\\'
        backslashes += 1
    return backslashes % 2 == 1


def _string_end(body: bytes, at: int) -> int:
    """The offset after the string that starts at `at`, or -1 when it is not terminated (memchr speed)."""
    end = body.find(b'"', at + 1)
    while end > 0 and body[end - 1] == 0x5C and _escaped(body, end):
        end = body.find(b'"', end + 1)
    return end + 1 if end >= 0 else -1


def _is_model_key(body: bytes, at: int, end: int, depth: int) -> int | None:
    """Where the value starts when the string at..end is the top-level key "model"."""
    if depth == 1 and end - at == 7 and body[at:end] == _MODEL_KEY:
        return _value_after_key(body, end)
    return None


def _incomplete(body: bytes, complete: bool, message: str) -> UnreadableBodyError:
    if complete:
        return UnreadableBodyError(message)
    return ModelNotInPrefixError(
        f"a body larger than the gateway buffers must name its model within its first {len(body)} bytes"
    )


async def _scan_members(body: bytes, start: int, complete: bool = True) -> str | None:
    """Walk the object at `start` token by token; the value of its top-level `model` key.

    The whole object is walked (a second top-level `model` is refused, as the small-body path and the
    backend refuse it); a prefix (``complete`` false) only until its model. At most MAX_TOKENS strings and
    brackets are looked at (about a second of CPU): a body with more is refused rather than allowed to occupy
    the CPU."""
    depth = 0
    count = 0
    found: str | None = None
    seen_model = False
    search = _STRUCTURE.search
    match = search(body, start)
    while match is not None:
        at = match.start()
        if body[at] == 0x22:  # '"'
            end = _string_end(body, at)
            if end < 0:
                raise _incomplete(body, complete, "the JSON body has an unterminated string")
            value = _is_model_key(body, at, end, depth)
            if value:
                if seen_model:
                    raise UnreadableBodyError(DUPLICATE_MODEL)
                seen_model, found = True, _decode_model(body, value)
                if not complete:  # the rest is not here: route by the first
                    return found
            match = search(body, end)
        else:
            depth += 1 if body[at] in b"{[" else -1
            if depth == 0:
                _closed(body, at + 1)
                return found
            match = search(body, at + 1)
        count += 1
        if count % _YIELD_EVERY == 0:
            if count >= MAX_TOKENS:
                raise UnreadableBodyError(
                    f"the JSON body has more than {MAX_TOKENS} strings and brackets: send a smaller body"
                )
            await asyncio.sleep(0)
    raise _incomplete(body, complete, "the JSON body ends before its last bracket is closed")


def _closed(body: bytes, end: int) -> None:
    """The top-level object closed at `end` without a model: check that nothing follows."""
    if body[end:].strip():
        raise UnreadableBodyError("the JSON body has data after its end")


class BufferBudget:
    """A global cap on request bytes buffered at once, shared by every request, and a share of it per client
    address: one client cannot hold the whole budget."""

    def __init__(self, limit: int, per_client: int | None = None) -> None:
        self.limit = limit
        self.per_client = per_client if per_client is not None else limit
        self.used = 0
        self.clients: dict[str, int] = {}

    def take(self, size: int, client: str | None = None) -> bool:
        if self.used + size > self.limit:
            return False
        if client is not None:
            held = self.clients.get(client, 0)
            if held + size > self.per_client:
                return False
            self.clients[client] = held + size
        self.used += size
        return True

    def give(self, size: int, client: str | None = None) -> None:
        self.used -= size
        if client is not None and size:
            held = self.clients.get(client, 0) - size
            if held > 0:
                self.clients[client] = held
            else:
                self.clients.pop(client, None)
