"""What clients send inside messages, parsed the same way for every provider.

`data:` URLs (images, audio, files sent inline), base64 in either alphabet, and
the JSON text of a tool call's `arguments`. Each failure is the client's 400,
naming the parameter, with one message whichever provider serves the route.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from ..errors import InvalidRequest

TOOL_ARGUMENTS_MESSAGE = "The tool call's `arguments` must be a JSON object (a string of JSON text)."


@dataclass(frozen=True)
class DataURL:
    """The parts of a `data:` URL."""

    mime: str  # lower-cased; text/plain when the URL names none
    is_base64: bool
    data: str  # the payload as written after the comma (base64 text, or percent-encoded bytes)

    def bytes(self, param: str) -> bytes:
        """The payload decoded; a 400 naming `param` for broken base64."""
        return decode_base64(self.data, param) if self.is_base64 else unquote_to_bytes(self.data)


def parse_data_url(url: str, param: str) -> DataURL:
    """The parts of `url`, which starts with `data:`; a 400 naming `param` when it has no comma."""
    header, comma, payload = url[len("data:") :].partition(",")
    if not comma:
        raise InvalidRequest("This data: URL has no comma separating its header from its data.", param=param)
    fields = header.split(";")
    mime = fields[0].strip().lower() or "text/plain"
    return DataURL(mime=mime, is_base64=any(f.strip().lower() == "base64" for f in fields[1:]), data=payload)


def decode_base64(value: str, param: str) -> bytes:
    """Bytes from standard or URL-safe base64, padding optional."""
    text = re.sub(r"\s+", "", value).replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("This value is not valid base64.", param=param) from None


def parse_tool_arguments(arguments: str, param: str) -> dict[str, Any]:
    """A tool call's `arguments` as the JSON object providers take back (empty text: no arguments)."""
    if not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise InvalidRequest(TOOL_ARGUMENTS_MESSAGE, param=param) from None
    if not isinstance(parsed, dict):
        raise InvalidRequest(TOOL_ARGUMENTS_MESSAGE, param=param)
    return parsed
