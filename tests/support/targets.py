"""Load-test targets: a tiny ASGI app with healthy, slow, flaky and CPU-bound endpoints.

Run: `python -m tests.support.targets PORT` (uvicorn, one worker, 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from typing import Any

_counter = itertools.count()
_window: list[float] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    status, body = 200, b'{"ok":true}'
    if path == "/slow":
        await asyncio.sleep(0.05)
    elif path == "/flaky":
        if next(_counter) % 50 == 0:  # 2 % of requests fail
            status, body = 503, b'{"ok":false}'
    elif path == "/limited":
        now = time.monotonic()
        _window[:] = [t for t in _window if now - t < 1.0] + [now]
        if len(_window) > 10:  # 10 requests per second
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [(b"retry-after", b"1"), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
    elif path == "/cpu":
        end = time.perf_counter() + 0.004  # ~4 ms of CPU: capacity ~250 req/s on one core
        while time.perf_counter() < end:
            pass
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
