"""Logging for poolparty: the ``poolparty`` logger and a JSON-lines file per map.

json_line_logger 0.0.10 has two defects for us. It builds its JSON by pasting the
message into a ``%(message)s`` format string, so a message holding a quote, a backslash
or a newline (a path on Windows, a traceback, sbatch's stderr) makes an invalid line;
and its ``LoggerFile`` opens the file with mode ``"w"``, so a client resuming a map
would erase the log of the client that died. We keep its line format (keys t, l, m, c
and its date format) with a formatter that encodes every field with :func:`json.dumps`,
written by our own handler that appends to a file created 0600.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import json_line_logger

log = logging.getLogger("poolparty")


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record, with json_line_logger's keys, always valid JSON."""

    def __init__(self) -> None:
        super().__init__(datefmt=json_line_logger.DATEFMT_ISO8601)

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        fields = {
            "t": f"{self.formatTime(record, self.datefmt)}.{int(record.msecs):03d}",
            "l": record.levelname,
            "m": message,
            "c": f"{record.pathname}:{record.funcName}:{record.lineno}",
        }
        return json.dumps(fields, ensure_ascii=False)


def json_file_logger(path: str | os.PathLike, name: str) -> logging.Logger:
    """A logger appending valid JSON lines to ``path``, a file private to the user."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(JsonLineFormatter())
    logger = logging.Logger(name=name)
    logger.addHandler(handler)
    return logger


def map_logger(path: Path, map_id: str) -> logging.Logger:
    """A logger for one map: its records go to ``path`` (JSON lines) and, through the
    ``poolparty`` logger, to the console when verbose. One per map, so maps running
    side by side in threads never write into each other's log."""
    logger = logging.getLogger(f"poolparty.map.{map_id}")
    logger.setLevel(logging.INFO)
    for handler in json_file_logger(path, name=f"poolparty.file.{map_id}").handlers:
        logger.addHandler(handler)
    return logger


def close_map_logger(logger: logging.Logger) -> None:
    """Close the file and forget the logger (maps are many; loggers live forever)."""
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)
    logging.Logger.manager.loggerDict.pop(logger.name, None)


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is when a message comes, not as it was when verbose was
    first asked for: Jupyter and pytest replace sys.stderr, and a handler holding an old
    one writes into a closed stream ("--- Logging error ---")."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - whatever sys.stderr is
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass  # StreamHandler.__init__ sets it; the property always reads sys.stderr


def configure_verbose(verbose: bool) -> None:
    """``verbose=True``: show poolparty's INFO messages on stderr (once)."""
    if not verbose:
        return
    log.setLevel(logging.INFO)
    if not any(getattr(h, "_poolparty_console", False) for h in log.handlers):
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("poolparty: %(message)s"))
        handler._poolparty_console = True  # type: ignore[attr-defined]
        log.addHandler(handler)
