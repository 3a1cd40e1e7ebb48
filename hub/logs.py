"""Log lines: one per notable event (start, stop, Redis lost and back, slow client dropped)."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from hub.config import Settings
from hub.server import UNFINISHED_RESPONSE


class _DroppedStreamFilter(logging.Filter):
    """Hide the server's complaint about a stream the gateway cut on purpose.

    A slow client is dropped by returning from its stream unfinished: ASGI
    offers no other way to close a connection that is not draining, and the
    gateway logs its own line for it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != UNFINISHED_RESPONSE


def configure(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("uvicorn.error").addFilter(_DroppedStreamFilter())
