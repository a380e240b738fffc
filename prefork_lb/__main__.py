"""``python -m prefork_lb ctl ...``: the runtime-control command (``ctl.py``)."""

from __future__ import annotations

import sys

from prefork_lb.ctl import main

if __name__ == "__main__":
    if sys.argv[1:2] != ["ctl"]:
        sys.exit("usage: python -m prefork_lb ctl [--url URL] [--token TOKEN] COMMAND ...")
    sys.exit(main(sys.argv[2:]))
