"""``multipart/form-data`` bodies split into their parts, every part's bytes kept as they were sent.

A general form parser decodes a part without a plain ``filename`` parameter as text, so an image sent that way (no
``filename``, or only the RFC 6266 ``filename*``) arrives mangled or is dropped. Here every part keeps its raw
bytes, its field name and its file name (``filename*`` decoded and preferred, as RFC 6266 asks), and the caller
decides, part by part, what it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from python_multipart.multipart import MultipartParser, parse_options_header


class MultipartError(ValueError):
    """A malformed body (``status`` 400) or one over a limit (413); the message says which part."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Part:
    """One part of the body.

    Attributes:
        index: its position in the body, from 0.
        field: the ``name`` parameter of its ``Content-Disposition``.
        filename: its file name (``filename*`` decoded, else ``filename``), ``None`` when it has none.
        content_type: its ``Content-Type`` (lower case, without parameters), ``""`` when absent.
        data: its bytes.
    """

    index: int
    field: str
    filename: str | None
    content_type: str
    data: bytes


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _extended(value: bytes) -> str | None:
    """An RFC 5987 ``charset'language'percent-encoded`` value, or ``None`` when it is not one."""
    charset, sep, rest = _text(value).partition("'")
    _, sep2, encoded = rest.partition("'")
    if not sep or not sep2:
        return None
    try:
        return unquote(encoded, encoding=charset or "utf-8", errors="strict")
    except (LookupError, UnicodeDecodeError):
        return None


def parse_multipart(body: bytes, content_type: str, *, max_parts: int, max_part_bytes: int) -> list[Part]:
    """Split ``body`` into its parts.

    Args:
        body: the whole request body.
        content_type: the request's ``Content-Type`` header (with its ``boundary``).
        max_parts: most parts accepted.
        max_part_bytes: largest part accepted, bytes.

    Raises:
        MultipartError: no boundary, a malformed body, a part without a name, too many parts or a part too large.
    """
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultipartError("the Content-Type header has no boundary")
    parts: list[Part] = []
    state: dict[str, object] = {}

    def begin() -> None:
        if len(parts) >= max_parts:
            raise MultipartError(f"more than {max_parts} parts", 413)
        state.update(headers=[], name=b"", value=b"", data=bytearray())

    def header_field(data: bytes, start: int, end: int) -> None:
        state["name"] = state["name"] + data[start:end]  # type: ignore[operator]

    def header_value(data: bytes, start: int, end: int) -> None:
        state["value"] = state["value"] + data[start:end]  # type: ignore[operator]

    def header_end() -> None:
        state["headers"].append((bytes(state["name"]).lower(), bytes(state["value"])))  # type: ignore[union-attr, arg-type]
        state["name"], state["value"] = b"", b""

    def part_data(data: bytes, start: int, end: int) -> None:
        buf: bytearray = state["data"]  # type: ignore[assignment]
        if len(buf) + end - start > max_part_bytes:
            raise MultipartError(f"part {len(parts)} is larger than {max_part_bytes} bytes", 413)
        buf += data[start:end]

    def part_end() -> None:
        headers = dict(state["headers"])  # type: ignore[call-overload]
        index = len(parts)
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        if b"name" not in disposition:
            raise MultipartError(f"part {index} has no name in its Content-Disposition header")
        filename = _extended(disposition[b"filename*"]) if b"filename*" in disposition else None
        if filename is None and b"filename" in disposition:
            filename = _text(disposition[b"filename"])
        ctype, _ = parse_options_header(headers.get(b"content-type", b""))
        parts.append(Part(index, _text(disposition[b"name"]), filename, _text(ctype), bytes(state["data"])))  # type: ignore[arg-type]

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": begin,
            "on_header_field": header_field,
            "on_header_value": header_value,
            "on_header_end": header_end,
            "on_part_data": part_data,
            "on_part_end": part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartError:
        raise
    except Exception as e:  # the parser's own errors describe the client's bytes only
        raise MultipartError(f"malformed body ({e})") from None
    if not parts and body.strip():
        raise MultipartError("no part found (is the boundary right?)")
    return parts
