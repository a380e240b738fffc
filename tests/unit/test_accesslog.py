"""The lean access logger writes exactly the line gunicorn's own Logger writes."""

from __future__ import annotations

import io
import logging
import logging.handlers
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from prefork_lb.accesslog import AccessLogger, publish_record
from prefork_lb.record import RECORD_KEY, RequestRecord

EVERY_ATOM = (
    '%(h)s %(l)s %(u)s "%(r)s" %(s)s %(m)s %(U)s %(q)s %(H)s %(b)s %(B)s "%(f)s" "%(a)s" '
    "%(T)s %(D)s %(M)s %(L)s %(p)s %({x-request-id}i)s %({content-type}o)s "
    "%({prefork_lb.backend}e)s %({missing}e)s %({missing}i)s %(nope)s 100%%"
)
PREFORK_LB_FORMAT = (
    '%(h)s "%(r)s" %(s)s %(B)s %(M)sms pid=%(p)s '
    "backend=%({prefork_lb.backend}e)s upstream=%({prefork_lb.upstream_time}e)ss "
    "retries=%({prefork_lb.retries}e)s error=%({prefork_lb.error}e)s "
    "id=%({prefork_lb.request_id}e)s"
)


def _line(logger_class: type[Logger], fmt: str, sent: int | None, environ: dict[str, Any]) -> str:
    # Loggers are process-wide: start each line from gunicorn's fresh state.
    for name in ("gunicorn.access", "gunicorn.error"):
        logging.getLogger(name).handlers.clear()
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", fmt)
    logger = logger_class(cfg)
    stream = io.StringIO()
    for handler in logger.access_log.handlers:
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)
    resp = SimpleNamespace(
        status="200 OK",
        sent=sent,
        headers=[("Content-Type", 'text/plain; q="1"'), ("X-A", "b")],
    )
    req = SimpleNamespace(headers=[("X-REQUEST-ID", 'abc"def'), ("HOST", "a")])
    logger.access(resp, req, environ, timedelta(seconds=1, microseconds=234567))
    return stream.getvalue()


@pytest.mark.parametrize("fmt", [EVERY_ATOM, PREFORK_LB_FORMAT], ids=["every-atom", "prefork_lb"])
@pytest.mark.parametrize("sent", [1234, None], ids=["sent", "nothing-sent"])
def test_same_line_as_gunicorn(fmt: str, sent: int | None) -> None:
    """Same atoms, same escaping of quotes, same dashes for what is missing."""
    environ = {
        "REMOTE_ADDR": "10.0.0.1",
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/a?x=1",
        "PATH_INFO": "/a",
        "QUERY_STRING": "x=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_USER_AGENT": 'ua "quoted"',
        "prefork_lb.backend": "http://127.0.0.1:9001",
        "prefork_lb.upstream_time": "0.001",
        "prefork_lb.request_id": "5b0f",
    }
    lean = _line(AccessLogger, fmt, sent, environ)
    assert lean.count("\n") == 1
    assert lean == _line(Logger, fmt, sent, environ)


def test_an_operators_logging_config_gets_gunicorns_records() -> None:
    """With a logging config, records carry gunicorn's atoms (record.args) for filters to read."""
    for name in ("gunicorn.access", "gunicorn.error"):
        logging.getLogger(name).handlers.clear()
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set(
        "logconfig_dict",
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "kept": {"class": "logging.handlers.BufferingHandler", "capacity": 10},
                "console": {"class": "logging.StreamHandler"},  # gunicorn's root uses it
            },
            "loggers": {
                "gunicorn.access": {"handlers": ["kept"], "level": "INFO", "propagate": False}
            },
        },
    )
    logger = AccessLogger(cfg)
    resp = SimpleNamespace(status="200 OK", sent=7, headers=[])
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/h", "PATH_INFO": "/h"}
    environ["SERVER_PROTOCOL"] = "HTTP/1.1"
    logger.access(resp, SimpleNamespace(headers=[]), environ, timedelta(microseconds=5))
    (handler,) = logger.access_log.handlers
    assert isinstance(handler, logging.handlers.BufferingHandler)
    (record,) = handler.buffer
    assert record.args["U"] == "/h"
    assert record.args["s"] == "200"


def test_prefork_lb_fields_come_from_the_request_record() -> None:
    """The lean line reads backend, timing, retries, error and id from the record, as published."""
    record = RequestRecord(
        request_id="5b0f", backend="http://127.0.0.1:9001", retries=1, upstream_time=0.0042
    )
    environ = {
        "REMOTE_ADDR": "10.0.0.1",
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/a",
        "SERVER_PROTOCOL": "HTTP/1.1",
        RECORD_KEY: record,
    }
    lean = _line(AccessLogger, PREFORK_LB_FORMAT, 12, environ)
    assert "backend=http://127.0.0.1:9001 upstream=0.004s retries=1 error=- id=5b0f" in lean
    published = dict(environ)
    publish_record(published)
    assert lean == _line(Logger, PREFORK_LB_FORMAT, 12, published)
