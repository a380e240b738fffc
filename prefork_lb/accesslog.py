"""Gunicorn's logger with a cheaper access line: the same text, less work per request.

Gunicorn's ``Logger.access`` builds every atom it knows for every request (the
whole environ and every header, each escaped), then hands a dict to
``logging``, which makes a record, finds the caller's frame and takes the
handler's lock. This one computes only the atoms ``access_log_format`` names,
with the same values and escaping, and writes the line straight to the
stream when the access log is gunicorn's own plain handler (``-`` or a
file). Anything else (syslog, a ``logconfig`` of the operator's, filters,
statsd) goes through gunicorn's own ``access``, unchanged: its formatters
and filters may read the record's atoms.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from gunicorn.glogging import Logger
from gunicorn.instrument.statsd import Statsd

from prefork_lb.record import LOG_FIELDS, RECORD_KEY

_ATOM = re.compile(r"%\(([^)]*)\)")
_Atom = Callable[[Any, Any, dict[str, Any], timedelta], Any]


def _status(resp: Any, req: Any, environ: dict[str, Any], rt: timedelta) -> Any:
    status = resp.status
    return status.split(None, 1)[0] if isinstance(status, str) else status


def _sent(resp: Any, req: Any, environ: dict[str, Any], rt: timedelta) -> Any:
    return getattr(resp, "sent", None)


def _sent_or_dash(resp: Any, req: Any, environ: dict[str, Any], rt: timedelta) -> Any:
    return (getattr(resp, "sent", None) is not None and str(resp.sent)) or "-"


def _environ(key: str, default: Any = None) -> _Atom:
    return lambda resp, req, environ, rt: environ.get(key, default)


# Gunicorn's Logger.atoms, one function per atom ("u" needs the logger: see _atom).
_SIMPLE: dict[str, _Atom] = {
    "h": _environ("REMOTE_ADDR", "-"),
    "l": lambda resp, req, environ, rt: "-",
    "r": lambda resp, req, environ, rt: " ".join(
        (environ["REQUEST_METHOD"], environ["RAW_URI"], environ["SERVER_PROTOCOL"])
    ),
    "s": _status,
    "m": _environ("REQUEST_METHOD"),
    "U": _environ("PATH_INFO"),
    "q": _environ("QUERY_STRING"),
    "H": _environ("SERVER_PROTOCOL"),
    "b": _sent_or_dash,
    "B": _sent,
    "f": _environ("HTTP_REFERER", "-"),
    "a": _environ("HTTP_USER_AGENT", "-"),
    "T": lambda resp, req, environ, rt: rt.seconds,
    "D": lambda resp, req, environ, rt: rt.seconds * 1000000 + rt.microseconds,
    "M": lambda resp, req, environ, rt: rt.seconds * 1000 + int(rt.microseconds / 1000),
    "L": lambda resp, req, environ, rt: f"{rt.seconds:d}.{rt.microseconds:06d}",
}


def _last(lines: Any, name: str) -> Any:
    """The value of the last of ``lines`` named ``name`` (lower case), or "-"."""
    if hasattr(lines, "items"):
        lines = lines.items()
    found: Any = "-"
    for key, value in lines:
        if key.lower() == name:
            found = value
    return found


def _record_field(name: str) -> _Atom:
    # prefork_lb's own fields (backend, upstream_time, ...) come from the request's record.
    field = LOG_FIELDS[name]

    def atom(resp: Any, req: Any, environ: dict[str, Any], rt: timedelta) -> Any:
        record = environ.get(RECORD_KEY)
        return environ.get(name, "-") if record is None else field(record)

    return atom


def publish_record(environ: dict[str, Any]) -> None:
    """Put the request record's fields into the environ, for gunicorn's own access line.

    Gunicorn's ``Logger.access`` (and its statsd logger) read ``%({key}e)s``
    atoms from the environ; the request path keeps them in its record.
    """
    record = environ.get(RECORD_KEY)
    if record is not None:
        environ.update(record.log_fields())


def _environ_var(name: str) -> _Atom:
    if name in LOG_FIELDS:
        return _record_field(name)

    def atom(resp: Any, req: Any, environ: dict[str, Any], rt: timedelta) -> Any:
        # The key as written (prefork_lb's keys are lower case), else any spelling.
        # Gunicorn's atoms() take the last of several spellings; no key here has two.
        if name in environ:
            return environ[name]
        return _last(environ, name)

    return atom


def _request_header(name: str) -> _Atom:
    return lambda resp, req, environ, rt: _last(getattr(req, "headers", req), name)


def _response_header(name: str) -> _Atom:
    return lambda resp, req, environ, rt: _last(resp.headers, name)


class AccessLogger(Logger):  # type: ignore[misc]  # gunicorn is untyped
    """``gunicorn.glogging.Logger`` with a cheaper ``access`` (same line)."""

    _atoms: tuple[tuple[str, _Atom], ...] = ()
    _direct: logging.StreamHandler[Any] | None = None

    def __new__(cls, cfg: Any) -> Any:  # noqa: D102, RUF100 - no docstring for __new__
        # Gunicorn switches its default logger to Statsd when statsd_host is
        # set; it does not for a logger_class of ours, so this does.
        if getattr(cfg, "statsd_host", None):
            return _Statsd(cfg)
        return super().__new__(cls)

    def setup(self, cfg: Any) -> None:
        """Gunicorn's setup (also on reload), then what the format needs, worked out once."""
        super().setup(cfg)
        atoms = []
        for key in dict.fromkeys(_ATOM.findall(cfg.access_log_format or "")):
            atoms.append((key, self._atom(key)))
        self._atoms = tuple(atoms)
        self._direct = self._plain_handler()

    def _atom(self, key: str) -> _Atom:  # noqa: PLR0911 - one return per kind of atom
        if key.startswith("{"):
            lowered = key.lower()
            name, kind = lowered[1:-2], lowered[-2:]
            if kind == "}e":
                return _environ_var(name)
            if kind == "}i":
                return _request_header(name)
            if kind == "}o":
                return _response_header(name)
            return lambda resp, req, environ, rt: "-"
        if key == "u":
            return lambda resp, req, environ, rt: self._get_user(environ) or "-"
        if key == "t":
            return lambda resp, req, environ, rt: self.now()
        if key == "p":
            return lambda resp, req, environ, rt: f"<{os.getpid()}>"
        return _SIMPLE.get(key, lambda resp, req, environ, rt: "-")

    def _plain_handler(self) -> logging.StreamHandler[Any] | None:
        """Gunicorn's own stream or file handler, when it is the only way the line goes."""
        log = self.access_log
        if log.filters or log.disabled or log.propagate or len(log.handlers) != 1:
            return None
        handler = log.handlers[0]
        if type(handler) not in (logging.StreamHandler, logging.FileHandler):
            return None
        formatter = handler.formatter
        if (
            handler.filters
            or handler.level > logging.INFO
            or type(formatter) is not logging.Formatter
            or formatter._fmt != self.access_fmt  # gunicorn's "%(message)s"
            or not isinstance(formatter._style, logging.PercentStyle)
        ):
            return None
        return handler  # type: ignore[no-any-return]

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        """Log one access line, as gunicorn's Logger.access would."""
        handler = self._direct
        if (
            handler is None
            or handler.stream is None
            or not self.access_log.isEnabledFor(logging.INFO)
        ):
            # Syslog, an operator's logging config, filters: they may read the
            # record's atoms (record.args), so gunicorn's own path, unchanged.
            publish_record(environ)
            super().access(resp, req, environ, request_time)
            return
        if not self.access_log_enabled:
            return
        try:
            values = {}
            for key, atom in self._atoms:
                value = atom(resp, req, environ, request_time)
                values[key] = value.replace('"', '\\"') if isinstance(value, str) else value
            line = self.cfg.access_log_format % values
        except Exception:  # noqa: BLE001 - gunicorn's own path reports it
            # A format this logger does not understand: gunicorn's own way.
            publish_record(environ)
            super().access(resp, req, environ, request_time)
            return
        try:
            handler.acquire()
            try:
                handler.stream.write(line + handler.terminator)
                handler.flush()
            finally:
                handler.release()
        except Exception:  # noqa: BLE001 - as gunicorn's access(): log, never fail the request
            self.error(traceback.format_exc())


class _Statsd(Statsd):  # type: ignore[misc]  # gunicorn is untyped
    """Gunicorn's statsd logger, with the request record's fields in its access line."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        """Gunicorn's statsd access (metrics and line), the record's fields included."""
        publish_record(environ)
        super().access(resp, req, environ, request_time)
