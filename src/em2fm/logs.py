"""Logging set-up for rule scripts: everything goes to the rule's log file."""

from __future__ import annotations

import logging
import sys
import traceback
from types import TracebackType


def setup_logging(path: str, level: int = logging.INFO) -> logging.Logger:
    """Send logging (and uncaught exceptions) to ``path``; errors also to stderr."""
    handlers: list[logging.Handler] = [logging.FileHandler(path, mode="w")]
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.ERROR)
    handlers.append(err)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)

    def _hook(exc_type: type[BaseException], exc: BaseException,
              tb: TracebackType | None) -> None:
        logger = logging.getLogger("em2fm")
        if hasattr(exc, "fix"):  # a user error (e.g. ExportError): the message says it all
            logger.error("%s", exc)
        else:
            text = "".join(traceback.format_exception(exc_type, exc, tb))
            logger.error("failed: %s\n%s", exc, text)

    sys.excepthook = _hook
    return logging.getLogger("em2fm")
