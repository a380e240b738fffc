"""Waiting for something a test cannot be told about: poll it, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    condition: Callable[[], bool],
    what: str,
    timeout: float = 5.0,
    *,
    context: Callable[[], str] | None = None,
) -> None:
    """Poll ``condition`` until it holds; after ``timeout`` seconds fail, naming ``what``.

    ``context`` (a balancer's ``log``, say) is called only on failure, for the message.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            extra = f"\n{context()}" if context is not None else ""
            raise AssertionError(f"not within {timeout} s: {what}{extra}")
        time.sleep(0.02)
