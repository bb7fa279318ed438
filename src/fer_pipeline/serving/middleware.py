"""Guards on request bodies, before FastAPI reads them: size, pace and how many at once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("fer_pipeline.serving")


class BodyLimit:
    """Guards request bodies. One over ``limit`` bytes gets 413: at once from its
    ``Content-Length``, before any of it is read, and while a body without one streams
    in. One whose next chunk takes over ``timeout`` seconds gets 408. One that finds
    ``uploads`` bodies being received gets 503 with ``Retry-After`` at once. These
    answers, and any other sent before its request's body has all come, close the
    connection."""

    def __init__(
        self, app: Any, limit: int, timeout: float | None = None, uploads: int | None = None
    ):
        self.app, self.limit, self.timeout, self.uploads = app, limit, timeout, uploads
        self.receiving = 0  # bodies being received now

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        size = int(declared) if declared.isdigit() else 0
        if size > self.limit:
            return await _refuse(scope, send, self._too_large(f"{size:,} bytes declared"))
        pending = size > 0 or b"transfer-encoding" in headers  # a body is to come
        if pending and self.uploads is not None and self.receiving >= self.uploads:
            busy = f"too many uploads at once ({self.receiving} under way): try again shortly"
            return await _refuse(scope, send, _Refusal(503, busy, {"Retry-After": "1"}))
        self.receiving += pending
        seen, started = 0, False

        def received() -> None:
            nonlocal pending
            self.receiving -= pending
            pending = False

        async def counted() -> dict:
            nonlocal seen
            try:  # no time limit once the body is in: what follows waits for a disconnect
                async with asyncio.timeout(self.timeout if pending else None):
                    message = await receive()
            except TimeoutError:
                received()
                raise _Refusal(408, f"no more of the body came for {self.timeout:g} s") from None
            seen += len(message.get("body", b""))
            if seen > self.limit:
                received()
                raise self._too_large(f"over {self.limit:,} bytes sent")
            if not message.get("more_body", False):
                received()
            return message

        async def tracked(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if pending:  # the rest of the body is not read: the connection goes
                    message = {**message, "headers": _closing(message.get("headers", []))}
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _Refusal as refusal:  # raised outside FastAPI's body parsing
            if not started:
                await _refuse(scope, send, refusal)
        finally:
            received()

    def _too_large(self, what: str) -> _Refusal:
        return _Refusal(413, f"the request body is larger than {self.limit:,} bytes ({what})")


class _Refusal(StarletteHTTPException):
    """A request body refused while it comes in; an HTTP exception, as FastAPI passes
    those on from its body parsing (others become 400). The connection is closed."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(status, detail, headers={"Connection": "close", **(headers or {})})


def _closing(headers: list) -> list:
    if any(name.lower() == b"connection" for name, _ in headers):
        return headers
    return [*headers, (b"connection", b"close")]


async def _refuse(scope: dict, send: Any, refusal: _Refusal) -> None:
    logger.warning(
        "%d %s %s: %s", refusal.status_code, scope["method"], scope["path"], refusal.detail
    )
    response = JSONResponse(
        {"detail": refusal.detail}, status_code=refusal.status_code, headers=refusal.headers
    )
    await response(scope, _no_body, send)


async def _no_body() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}
