"""The layering as tests: the pure core imports no I/O, and copied stdlib code is pinned.

The pure modules take values (including ``now``) and return decisions
(DESIGN.md, "Layout"; STYLE.md rule 1). What they import is checked twice:
as it really happens (each imported in a clean interpreter, which sees what
their imports import in turn) and as written (their own import statements,
which also sees imports inside functions). The guard that the master never
imports urllib3 runs a real master: tests/integration/test_master_imports.py.
"""

from __future__ import annotations

import ast
import hashlib
import http.client
import importlib.util
import inspect
import json
import pkgutil
import site
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.support import imports

ROOT = Path(__file__).resolve().parents[2]

# The pure core: each one is values in, decisions out; no sockets, no clock.
PURE_MODULES = [
    "prefork_lb.scheduling",  # rotation, weights, least-connections, the retry rule
    "prefork_lb.health",  # the health state machine; the clock is passed in
    "prefork_lb.readiness",  # the rule for "ready" and the probes' answers
    "prefork_lb.headers",  # hop-by-hop stripping, X-Forwarded-*, Via, response checks
    "prefork_lb.request",  # the client's request as a value
    "prefork_lb.errors",  # failures, each carrying its status
    "prefork_lb.values",  # parsers for setting values
    "prefork_lb.config",  # the frozen settings tree (reads the TOML file it is named)
    "prefork_lb.setting",  # the declaration of one setting
    "prefork_lb.settings_table",  # every setting, declared once
    "prefork_lb.settings_forwarding",  # forwarding and balancing settings
    "prefork_lb.settings_health",  # failure and health settings
    "prefork_lb.settings_control",  # admin, probes, state file and tunnel settings
    "prefork_lb.settings_dns",  # DNS settings
    "prefork_lb.settings_types",  # the frozen tree's dataclasses
    "prefork_lb.backend_tables",  # [[backends]] and [pools.NAME] as written
    "prefork_lb.route_tables",  # [[routes]] as written
    "prefork_lb.status_page",  # the admin page rendered from a document
    "prefork_lb.routes",  # the route table: (host, raw target, method) -> pool
    "prefork_lb.hashing",  # hash rings, hash keys, bounded load
    "prefork_lb.maglev",  # the Maglev table, built in steps
    "prefork_lb.sticky",  # signed sticky-cookie tokens
    "prefork_lb.admission",  # connection limits and waiting-room rules
    "prefork_lb.token_bucket",  # the rate limiters' arithmetic; the clock is passed in
    "prefork_lb.outlier",  # ejection by runs of 5xx; the clock is passed in
    "prefork_lb.runtime",  # drain, maint and weight writes; the state file's format
    "prefork_lb.extension_types",  # the request, response and headers extensions see
    "prefork_lb.dns",  # DNS names, answers as addresses, the last good set
    "prefork_lb.slots",  # which slot a DNS address takes, draining, freeing
    "prefork_lb.proxy_header",  # the PROXY protocol header read off a stream
]

# Standard-library modules that do I/O the core must leave to the shell.
IO_MODULES = frozenset(
    {
        "socket",
        "ssl",
        "select",
        "selectors",
        "asyncio",
        "mmap",
        "fcntl",
        "signal",
        "subprocess",
        "multiprocessing",
        "threading",
    }
)

# Known, and left for the architecture issue: values.parse_ca_bundle loads the
# CA bundle with ssl (which imports socket, select and selectors), so every
# module that reads setting values imports them. Keyed by the module whose own
# import statement pulls them in; test_known_exceptions_are_still_needed fails
# once they go, so that this entry goes too.
KNOWN_EXCEPTIONS: dict[str, frozenset[str]] = {
    "prefork_lb.values": frozenset({"ssl", "socket", "select", "selectors"}),
}

# Reading the clock: the core is passed ``now`` instead.
CLOCK_MODULES = frozenset({"time"})
CLOCK_READS = frozenset({"now", "utcnow", "today", "monotonic", "perf_counter", "time_ns"})


def _forbidden(top: str) -> str | None:
    """Why a pure module may not import the top-level package ``top``, or None if it may."""
    if top == "prefork_lb" or top.startswith("_") or top == "__future__":
        return None
    if top not in sys.stdlib_module_names:
        return "not the standard library"
    if top in IO_MODULES:
        return "does I/O"
    return None


@cache
def _imported_in_clean_interpreters() -> dict[str, Any]:
    """For every pure module: what importing it really added, and who asked (one subprocess)."""
    site_dirs = [*site.getsitepackages(), site.getusersitepackages()]
    result = subprocess.run(
        [sys.executable, "-I", "-S", imports.SCRIPT, str(ROOT), *site_dirs, "--", *PURE_MODULES],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found: dict[str, Any] = json.loads(result.stdout)
    return found


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_io_and_nothing_outside_the_standard_library(module: str) -> None:
    """Importing a pure module imports no gevent, urllib3, gunicorn, socket, ssl or other I/O."""
    outcome = _imported_in_clean_interpreters()[module]
    assert "error" not in outcome, f"{module} does not import cleanly: {outcome['error']}"
    bad = []
    for top, (importer, direct) in outcome["imported"].items():
        reason = _forbidden(top)
        if reason is None or top in KNOWN_EXCEPTIONS.get(importer, ()):
            continue
        via = f" (imported by {direct})" if direct and direct != module else ""
        bad.append(f"{module} imports {top}{via}: {reason}")
    assert not bad, "the pure core must leave I/O to the shell:\n" + "\n".join(bad)


def _modules_of(name: str) -> Iterator[tuple[str, Path]]:
    """The module ``name`` and, when it is a package, every module in it, with their files."""
    spec = importlib.util.find_spec(name)
    assert spec is not None
    assert spec.origin is not None, f"{name} has no source file"
    yield name, Path(spec.origin)
    for info in pkgutil.walk_packages(spec.submodule_search_locations or [], prefix=f"{name}."):
        yield from _modules_of(info.name)


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module name a ``from ... import`` statement in ``module`` names."""
    if not node.level:
        return node.module or ""
    package = module.rsplit(".", node.level)[0]
    return f"{package}.{node.module}" if node.module else package


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:`` (never run)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for stmt in node.body:
                lines |= {n.lineno for n in ast.walk(stmt) if isinstance(n, ast.stmt)}
    return lines


def _written_imports(module: str, tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, top-level package) for every import statement the module runs, anywhere in it."""
    skipped = _type_checking_only(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and node.lineno not in skipped:
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.lineno not in skipped:
            yield node.lineno, _resolve(module, node).split(".")[0]


@pytest.mark.parametrize("package", PURE_MODULES)
def test_pure_module_import_statements_name_no_io_and_no_clock(package: str) -> None:
    """No import statement in a pure module, even inside a function, names I/O or the clock."""
    bad = []
    for module, path in _modules_of(package):
        tree = ast.parse(path.read_text(), str(path))
        for line, top in _written_imports(module, tree):
            reason = "reads the clock (pass now in)" if top in CLOCK_MODULES else _forbidden(top)
            if reason is not None and top not in KNOWN_EXCEPTIONS.get(module, ()):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {top}: {reason}")
    assert not bad, "the pure core must leave I/O to the shell:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", PURE_MODULES)
def test_pure_module_reads_no_clock(package: str) -> None:
    """A pure module calls no now(), today(), monotonic() or the like: it is passed ``now``."""
    bad = []
    for module, path in _modules_of(package):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            call = node.func if isinstance(node, ast.Call) else None
            if isinstance(call, ast.Attribute) and call.attr in CLOCK_READS:
                bad.append(f"{path.relative_to(ROOT)}:{call.lineno}: {module} calls {call.attr}()")
    assert not bad, "the pure core is passed the time, it does not read it:\n" + "\n".join(bad)


@pytest.mark.parametrize(("module", "expected"), sorted(KNOWN_EXCEPTIONS.items()))
def test_known_exceptions_are_still_needed(module: str, expected: frozenset[str]) -> None:
    """Each tolerated import is still made by its module: a fixed one leaves the list."""
    outcome = _imported_in_clean_interpreters()[module]
    assert "error" not in outcome, f"{module} does not import cleanly: {outcome['error']}"
    gone = {top for top in expected if outcome["imported"].get(top, [None])[0] != module}
    assert not gone, (
        f"{module} no longer imports {', '.join(sorted(gone))}: "
        "remove it from KNOWN_EXCEPTIONS in tests/unit/test_layering.py"
    )


def _fingerprint(function: Callable[..., Any]) -> str:
    """A hash of a function's code as Python reads it: comments, layout and docstring aside."""
    node = ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]
    assert isinstance(node, ast.FunctionDef)
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        node.body = node.body[1:]
    return hashlib.sha256(ast.unparse(node).encode()).hexdigest()[:16]


# Taken from CPython 3.11.7. Each entry: the function, its fingerprint there,
# and what in prefork_lb/backend_http.py depends on it.
COPIED_FROM_HTTP_CLIENT = [
    pytest.param(
        http.client.HTTPResponse.begin,
        "4b24798eb96af7c8",
        "_FinalResponse.begin is a line-for-line copy of it (with parse_head and the "
        "IncompleteHead check): carry the change over, or drop the copy",
        id="HTTPResponse.begin",
    ),
    pytest.param(
        http.client.parse_headers,
        "65faff886d642640",
        "parse_head must give the message it gives (test_backend_http checks it for "
        "the heads hypothesis makes): check parse_head's fast path still does",
        id="parse_headers",
    ),
    pytest.param(
        http.client._read_headers,  # type: ignore[attr-defined]
        "62c2f65b563ef21b",
        "_FinalResponse.begin calls it and takes a last line b'' for a head cut short "
        "by the end of the stream (IncompleteHead): check that still holds",
        id="_read_headers",
    ),
]


@pytest.mark.parametrize(("function", "pinned", "recheck"), COPIED_FROM_HTTP_CLIENT)
def test_copied_http_client_code_is_unchanged(
    function: Callable[..., Any], pinned: str, recheck: str
) -> None:
    """The http.client code backend_http.py copies is that of the Python it was copied from."""
    found = _fingerprint(function)
    assert found == pinned, (
        f"http.client.{function.__qualname__} in Python {sys.version.split()[0]} differs from "
        f"CPython 3.11.7's (fingerprint {found}, pinned {pinned}). In prefork_lb/backend_http.py: "
        f"{recheck}; then pin the new fingerprint and Python version in "
        "tests/unit/test_layering.py."
    )
