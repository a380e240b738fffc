# shellcheck shell=bash
# Sourced by scripts/test: make sure a headless browser is there for the status page test.
# Debian's chromium and chromedriver; installed with apt-get when missing and we are root
# (as on CI). Otherwise the browser test is skipped, and says why.

ensure_browser() {
    if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing chromium and chromedriver for the status page test (apt-get)"
        # A failed install must not stop the other tests: the browser test then skips.
        if ! { apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
                >/dev/null; }; then
            echo "== apt-get could not install them: the status page browser test will be skipped"
        fi
    else
        echo "== no chromium/chromedriver: the status page browser test will be skipped" \
            "(install: sudo apt-get install -y chromium chromium-driver)"
    fi
}
