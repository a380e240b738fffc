# shellcheck shell=bash
# Sourced by scripts/loadtest.sh and scripts/compare-commits.sh: progress lines,
# finding the tools they drive, and the apt-get line for one that is missing.

progress() { printf '%s\n' "$*" >&2; }

# The apt-get line for a missing tool; root needs no sudo.
install_hint() {
    local sudo="sudo "
    [ "$(id -u)" = 0 ] && sudo=""
    if command -v apt-get >/dev/null; then
        echo "${sudo}apt-get install -y $1"
    else
        echo "install '$1' with your package manager (Debian/Ubuntu: ${sudo}apt-get install -y $1)"
    fi
}

# The tool's path, or nothing. nginx and haproxy live in /usr/sbin, which is not
# on a normal user's PATH on Debian. (bash's command -v also names a file it
# cannot execute, when it finds no better one: check.)
find_tool() {
    local path
    path=$(PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" command -v "$1") || return 0
    if [ -x "$path" ]; then
        echo "$path"
    fi
}
