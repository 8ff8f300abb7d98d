"""notify: tell people how a release ended, through a Prefect notification block."""

from __future__ import annotations

import inspect
from typing import Any

from prefect.blocks.abstract import NotificationBlock
from prefect.logging import get_logger
from prefect.utilities.asyncutils import run_coro_as_sync

from tasks.core.messages import notification
from tasks.core.models import ReleaseRecord
from tasks.core.redact import redact


def send(block: NotificationBlock | None, record: ReleaseRecord, secrets: list[str]) -> bool:
    """Send and report success; never raises, because it runs inside failure hooks too."""
    subject, body = notification(record)
    return send_text(block, subject, body, secrets)


def send_text(block: NotificationBlock | None, subject: str, body: str, secrets: list[str]) -> bool:
    """Any message, redacted; never raises (a lost notification must not fail the work)."""
    if block is None:
        return False
    try:
        with block.raise_on_failure():
            # Apprise-based blocks dispatch synchronously here; others return a coroutine.
            result: Any = block.notify(body=redact(body, secrets), subject=redact(subject, secrets))
            if inspect.iscoroutine(result):
                run_coro_as_sync(result)
        return True
    except Exception as exc:  # noqa: BLE001 - a lost notification must not fail the release
        get_logger("shipyard.notify").error("notification failed: %s", redact(str(exc), secrets))
        return False
