"""What importing a module really imports: each module imported in a clean interpreter.

Run as a script (``python -I -S imports.py ROOT SITE_DIR... -- MODULE...``):
the interpreter starts with nothing but its own start-up modules (``-S``: no
site, no ``.pth`` files), the project and the site-packages are put on the
path, and for each module a forked child imports it from that clean state.
It prints one JSON object: for each module, every top-level package that
importing it added to ``sys.modules``, with the nearest ``prefork_lb`` module
and the nearest module of any kind on the stack when that package was first
imported (who asked for it), or the import's error.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

SCRIPT = __file__


def _importers() -> list[str | None]:
    """The nearest prefork_lb module on the stack, and the nearest module of any kind."""
    nearest: str | None = None
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if isinstance(name, str) and not name.startswith("importlib"):
            nearest = nearest or name
            if name.split(".")[0] == "prefork_lb":
                return [name, nearest]
        frame = frame.f_back  # type: ignore[assignment]
    return [None, nearest]


def _import_in_child(module: str, baseline: set[str], write_fd: int) -> None:
    first_importer: dict[str, list[str | None]] = {}

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if event == "import":
            first_importer.setdefault(str(args[0]).split(".")[0], _importers())

    sys.addaudithook(audit)
    try:
        __import__(module)
    except BaseException as err:  # reported to the test, whatever it is
        result: dict[str, Any] = {"error": f"{type(err).__name__}: {err}"}
    else:
        added = {name.split(".")[0] for name in set(sys.modules) - baseline}
        result = {"imported": {top: first_importer.get(top, [None, None]) for top in sorted(added)}}
    os.write(write_fd, json.dumps(result).encode())


def main(argv: list[str]) -> None:
    """Import each module of ``argv`` in its own forked child; print what each added."""
    split = argv.index("--")
    sys.path[:0] = argv[:split]
    baseline = set(sys.modules)
    results = {}
    for module in argv[split + 1 :]:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                _import_in_child(module, baseline, write_fd)
            finally:
                os._exit(0)
        os.close(write_fd)
        chunks = []
        while chunk := os.read(read_fd, 65536):
            chunks.append(chunk)
        os.close(read_fd)
        os.waitpid(pid, 0)
        results[module] = json.loads(b"".join(chunks) or b'{"error": "child died"}')
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
