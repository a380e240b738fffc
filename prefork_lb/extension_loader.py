"""The extensions named in the settings: checked by the master at start, built in each worker.

The master must know, before it forks, that every name imports and which
shared counters and rate limiters the extensions declare (the memory for
them is made before fork). It finds out in a short-lived forked child, so
that the extensions' own imports (a database driver, urllib3) never land in
the master, where they would be imported before gevent patches the workers.
A name that does not import stops the start with one line naming it.

Each worker then imports the extensions again and builds each one, once,
with its options; an exception there stops the worker (and gunicorn stops
the start) with a message naming the extension.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prefork_lb.config import Settings


class ExtensionStartError(RuntimeError):
    """An extension cannot be imported, declares nonsense or fails to build."""


@dataclass(frozen=True, slots=True)
class Declared:
    """The shared names the extensions asked for, over all of them."""

    counters: tuple[str, ...] = ()
    limiters: tuple[str, ...] = ()


def resolve(name: str) -> Any:
    """The object ``module:attribute`` names (the attribute may be dotted)."""
    module_name, _, attribute = name.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:  # an import runs arbitrary code
        raise ExtensionStartError(
            f"extension {name!r}: cannot import {module_name!r}: {type(err).__name__}: {err}"
        ) from err
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ExtensionStartError(
                f"extension {name!r}: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not callable(target):
        raise ExtensionStartError(f"extension {name!r}: {attribute!r} is not a class or callable")
    return target


def declared_names(name: str, factory: Any) -> Declared:
    """The ``shared_counters`` and ``rate_limiters`` ``factory`` declares, checked."""
    found = []
    for attribute in ("shared_counters", "rate_limiters"):
        names = getattr(factory, attribute, ())
        if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
            raise ExtensionStartError(
                f"extension {name!r}: {attribute} must be a list of names, got {names!r}"
            )
        found.append(tuple(names))
    return Declared(*found)


def _declarations(names: Iterable[str]) -> Declared:
    counters: list[str] = []
    limiters: list[str] = []
    for name in names:
        declared = declared_names(name, resolve(name))
        counters += [c for c in declared.counters if c not in counters]
        limiters += [r for r in declared.limiters if r not in limiters]
    return Declared(tuple(counters), tuple(limiters))


def check_in_child(names: Sequence[str]) -> Declared:
    """In the master: import every extension in a forked child; its declarations, or raise."""
    if not names:
        return Declared()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running the master's exit code
        code = 0
        try:
            os.close(read_end)
            report: dict[str, Any]
            try:
                declared = _declarations(names)
                report = {"counters": declared.counters, "limiters": declared.limiters}
            except ExtensionStartError as err:
                report = {"error": str(err)}
            with os.fdopen(write_end, "w") as out:
                json.dump(report, out)
        except BaseException:  # noqa: BLE001 - whatever it was, the child must exit here
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        text = reader.read()
    _, status = os.waitpid(pid, 0)
    if not text:
        raise ExtensionStartError(
            f"extensions {', '.join(names)}: importing them ended the process "
            f"(wait status {status})"
        )
    report = json.loads(text)
    if "error" in report:
        raise ExtensionStartError(report["error"])
    return Declared(tuple(report["counters"]), tuple(report["limiters"]))


def build(settings: Settings) -> list[tuple[str, object]]:
    """In a worker: each extension built once with its options, in the listed order."""
    built = []
    for name in settings.extensions:
        factory = resolve(name)
        try:
            extension = factory(settings.options_for(name))
        except Exception as err:
            raise ExtensionStartError(
                f"extension {name!r}: building it failed: {type(err).__name__}: {err}"
            ) from err
        built.append((name, extension))
    return built
