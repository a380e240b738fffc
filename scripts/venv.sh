# shellcheck shell=bash
# Sourced by scripts/serve and scripts/test: make .venv and install the project into it.
# Re-installs only when pyproject.toml changes, so the second run starts at once.

ensure_venv() {
    local extra="$1"
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "prefork_lb needs Python 3.11 or newer as python3 (found: $(python3 --version 2>&1))" >&2
        exit 1
    fi
    local hash stamp
    hash=$(sha256sum pyproject.toml | cut -c1-16)
    stamp=".venv/.installed-${extra:-runtime}-$hash"
    # The dev install includes the runtime one and the bench extra.
    if [ "$extra" != dev ] && [ -f ".venv/.installed-dev-$hash" ]; then
        stamp=".venv/.installed-dev-$hash"
    fi
    if [ ! -x .venv/bin/python ]; then
        echo "creating .venv ..." >&2
        python3 -m venv .venv
    fi
    if [ ! -f "$stamp" ]; then
        echo "installing prefork_lb${extra:+ with [$extra]} into .venv ..." >&2
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extra:+[$extra]}"
        rm -f .venv/.installed-*
        touch "$stamp"
    fi
}
