"""Read a request's images into memory under hard limits, then decode them; never touch the filesystem.

Starlette's own form parsing spools uploads over 1 MiB to temporary files and reads a body before the
route can refuse it. Here the body is streamed through python-multipart's parser with the limits
checked as bytes arrive: the declared Content-Length first (refused before one body byte is read),
then the running total, the size of each image and the number of images. An over-limit request is
answered as soon as it crosses the line, with a message that names the limit. The bytes all requests hold
at once are budgeted too (``BodyBudget``): many large uploads together get 503 + Retry-After, not the
server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from PIL import Image
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from ..config import BODY_TIMEOUTS
from ..data.image import image_size
from ..infer import ImageLoadError
from .engine import Engine
from .options import ServeOptions

IMAGE_FIELDS = ("files", "file")  # "file" is what the first /predict accepted for one image
ACCEPTED_TYPES = ("image/", "application/octet-stream")
MAX_NAME = 200


class UploadError(Exception):
    """A request the server refuses: an HTTP status and a message for the client."""

    def __init__(self, status: int, detail: str, retry_after_s: int | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.retry_after_s = status, detail, retry_after_s


class BodyBudget:
    """The request-body bytes the server holds at once, over all requests in flight (``--max-inflight-mb``)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[BodyTicket]:
        """A ticket for one request: what it takes is given back when the request is done."""
        ticket = BodyTicket(self)
        try:
            yield ticket
        finally:
            self.held -= ticket.held


class BodyTicket:
    def __init__(self, budget: BodyBudget) -> None:
        self.budget, self.held = budget, 0

    def take(self, n: int) -> None:
        budget = self.budget
        if budget.held + n > budget.limit:
            raise UploadError(503, f"the server is receiving {_mib(budget.held)} of uploads at once, its limit "
                                   f"(--max-inflight-mb {budget.limit / (1024 * 1024):g}); retry shortly",
                              retry_after_s=1)
        budget.held += n
        self.held += n


@dataclass
class Upload:
    """One image as sent: its bytes, the declared type, and a label (the client's file name, never a path)."""

    name: str
    content_type: str
    data: bytes = b""
    chunks: list[bytes] = field(default_factory=list, repr=False)


def _label(raw: bytes | None, index: int) -> str:
    """The client's file name as a display label: decoded, control characters dropped, length capped."""
    text = raw.decode("utf-8", "replace") if raw else ""
    text = "".join(ch for ch in text if ch.isprintable())[:MAX_NAME]
    return text or f"upload #{index + 1}"


def _mib(n: int) -> str:
    return f"{n:,} bytes" if n < 1024 * 1024 else f"{n / (1024 * 1024):.4g} MiB"


async def read_uploads(request: Request, options: ServeOptions, ticket: BodyTicket | None = None) -> list[Upload]:
    """The images in a multipart body (field ``files``) or a raw ``image/*`` body; ``UploadError`` otherwise.

    The bytes read are taken from ``ticket`` (the server's ``BodyBudget``) as they arrive.
    """
    ticket = ticket or BodyTicket(BodyBudget(options.max_request_bytes))
    content_type, params = parse_options_header(request.headers.get("content-type"))
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise UploadError(400, f"Content-Length {declared[:40]!r} is not a number")
        if int(declared) > options.max_request_bytes:
            raise UploadError(413, f"request body of {_mib(int(declared))} is over the limit of "
                                   f"{_mib(options.max_request_bytes)} (--max-request-mb)")
    kind = content_type.decode("latin-1").lower()
    if kind == "multipart/form-data":
        if b"boundary" not in params:
            raise UploadError(400, "multipart/form-data without a boundary parameter in Content-Type")
        uploads, others = await _read_multipart(request, params[b"boundary"], options, ticket)
    elif kind.startswith("image/"):
        data = await _read_raw(request, options, ticket)
        uploads, others = [Upload("body", kind, data)], []  # an empty one: 400 "empty (0 bytes)", as a part
    elif kind in ("", "application/x-www-form-urlencoded"):
        await _read_raw(request, options, ticket)  # drained under the same cap, then refused: a form without files
        uploads, others = [], []
    else:
        raise UploadError(415, f"Content-Type {kind!r} is not accepted: send multipart/form-data with the "
                               "images in the field 'files', or one image as the body with Content-Type image/*")
    if not uploads:
        got = f" (got field(s) {_shown_fields(others)})" if others else ""
        raise UploadError(422, "no image uploaded: send multipart/form-data with field 'files' (one part per "
                               f"image), or one image as the body with Content-Type image/*{got}")
    if others:
        raise UploadError(422, f"unexpected form field(s) {_shown_fields(others)}: images go in the "
                               "field 'files'; top_k is a query parameter (?top_k=3)")
    return uploads


def _shown_fields(names: list[str], *, most: int = 5, longest: int = 40) -> str:
    """The first few field names, each cut short: 20,000 parts of long names made a 4 MB error message."""
    shown = ", ".join(repr(n if len(n) <= longest else n[:longest] + "...") for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


async def _capped_stream(request: Request, limit: int, message: str, ticket: BodyTicket,
                         read_timeout_s: float) -> AsyncIterator[bytes]:
    """The request body chunk by chunk, ended with a 413 ``message`` as soon as more than ``limit`` bytes came.

    Each chunk is taken from ``ticket`` first (503 when the server holds too much); a client that hangs up
    part-way is a 400, not a server error; one that sends nothing for ``read_timeout_s``, or has not sent the
    whole body within ``BODY_TIMEOUTS`` times that, a 408 (its bytes are given back as the request ends).
    """
    total, loop = 0, asyncio.get_running_loop()
    deadline = loop.time() + BODY_TIMEOUTS * read_timeout_s
    chunks = request.stream().__aiter__()
    try:
        while True:
            wait = min(read_timeout_s, deadline - loop.time())
            try:
                chunk = await asyncio.wait_for(chunks.__anext__(), timeout=max(wait, 0.0))
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                if wait == read_timeout_s:
                    late, advice = f"sent nothing for {read_timeout_s:g} s", "send the request again, without pauses"
                else:  # a steady but slow link: 32 MiB in 300 s needs about 0.9 Mbit/s
                    late = f"did not send the whole body within {BODY_TIMEOUTS * read_timeout_s:g} s"
                    advice = "send fewer or smaller images per request (or the server needs a larger --read-timeout)"
                raise UploadError(408, f"the client {late} after {_mib(total)} of the body (--read-timeout "
                                       f"{read_timeout_s:g}); {advice}") from None
            total += len(chunk)
            if total > limit:
                raise UploadError(413, message)
            ticket.take(len(chunk))
            yield chunk
    except ClientDisconnect:
        raise UploadError(400, f"the client closed the connection after {_mib(total)} of the body") from None


async def _read_raw(request: Request, options: ServeOptions, ticket: BodyTicket) -> bytes:
    limit = options.max_upload_bytes
    message = f"body: larger than {_mib(limit)}, the limit per image (--max-upload-mb)"
    return b"".join([chunk async for chunk in _capped_stream(request, limit, message, ticket,
                                                              options.read_timeout_s)])


async def _read_multipart(request: Request, boundary: bytes, options: ServeOptions,
                          ticket: BodyTicket) -> tuple[list[Upload], list[str]]:
    uploads: list[Upload] = []
    others: list[str] = []
    part: dict[str, object] = {}
    header_field, header_value = bytearray(), bytearray()
    ended = False

    def on_part_begin() -> None:
        part.clear()
        part["headers"] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        part["headers"][bytes(header_field).lower()] = bytes(header_value)  # type: ignore[index]
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        headers: dict[bytes, bytes] = part["headers"]  # type: ignore[assignment]
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if name not in IMAGE_FIELDS:
            others.append(name[:MAX_NAME] or "(unnamed)")
            part["upload"] = None
            return
        if len(uploads) >= options.max_files:
            raise UploadError(413, f"more than {options.max_files} images in one request (--max-files); "
                                   "send them in several requests")
        content_type = headers.get(b"content-type", b"").decode("latin-1").strip().lower()
        upload = Upload(_label(disposition.get(b"filename"), len(uploads)), content_type)
        uploads.append(upload)
        part["upload"], part["size"] = upload, 0

    def on_part_data(data: bytes, start: int, end: int) -> None:
        upload: Upload | None = part.get("upload")  # type: ignore[assignment]
        if upload is None:
            return  # a field we do not take: not kept
        part["size"] = size = part["size"] + (end - start)  # type: ignore[operator]
        if size > options.max_upload_bytes:
            raise UploadError(413, f"{upload.name}: larger than {_mib(options.max_upload_bytes)}, the limit per "
                                   "image (--max-upload-mb)")
        upload.chunks.append(data[start:end])

    def on_part_end() -> None:
        upload: Upload | None = part.get("upload")  # type: ignore[assignment]
        if upload is not None:
            upload.data, upload.chunks = b"".join(upload.chunks), []

    def on_end() -> None:
        nonlocal ended
        ended = True

    limit = options.max_request_bytes
    try:  # the parser refuses some boundaries (over 256 bytes) when it is built
        parser = MultipartParser(boundary, {
            "on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_part_end": on_part_end,
            "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished, "on_end": on_end})
        async for chunk in _capped_stream(request, limit, f"request body over the limit of {_mib(limit)} "
                                                          "(--max-request-mb)", ticket, options.read_timeout_s):
            parser.write(chunk)
        parser.finalize()
    except UploadError:
        raise
    except Exception as e:  # python-multipart's parse errors: the body is not well-formed multipart
        raise UploadError(400, f"malformed multipart body ({type(e).__name__}: {e})") from None
    if not ended and (uploads or others):
        raise UploadError(400, "incomplete multipart body (no closing boundary)")
    return uploads, others


def check_upload(upload: Upload, options: ServeOptions) -> None:
    """Refuse, before decoding, what is not an image by its declared type, or has too many pixels."""
    if upload.content_type and not upload.content_type.startswith(ACCEPTED_TYPES):
        raise UploadError(415, f"{upload.name}: not an image (declared Content-Type {upload.content_type}); "
                               "send JPEG, PNG, WebP, BMP, GIF or TIFF")
    if not upload.data:
        raise UploadError(400, f"{upload.name}: empty (0 bytes)")
    limit = options.max_pixels  # at most Pillow's limit, which the decoder enforces (checked when the app is built)
    try:
        width, height = image_size(upload.data)  # the header only
    except Image.DecompressionBombError as e:
        raise UploadError(413, f"{upload.name}: refused as a decompression bomb ({e})") from None
    except Exception:
        return  # not readable as an image: the decoder says why, naming the file
    if width * height > limit:
        raise UploadError(413, f"{upload.name}: {width}x{height} = {width * height:,} pixels is over the limit of "
                               f"{limit:,} (--max-pixels)")


def decode(engine: Engine, upload: Upload, options: ServeOptions):  # type: ignore[no-untyped-def]
    """The model input for one upload, or the UploadError that says why it cannot be used (runs in a thread)."""
    try:
        check_upload(upload, options)
        return engine.preprocess(upload.data, upload.name)
    except UploadError as e:
        return e
    except ImageLoadError as e:
        return UploadError(400, str(e))
    except Exception as e:  # one odd image must not become a 500 for the whole request
        return UploadError(400, f"{upload.name}: could not be preprocessed ({type(e).__name__}: {e})")
