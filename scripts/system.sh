# shellcheck shell=bash
# Sourced by scripts/test: the Debian packages the tests drive as real peers.
#   chromium, chromium-driver  the status page in a real browser
#   haproxy                    an L4 front sending the PROXY protocol, the cluster test
#   dnsmasq-base               a real DNS server for backends found through DNS
#   iproute2                   network namespaces for the cluster test
# Installed with apt-get when missing and we are root (as on CI); otherwise the
# command to install them is printed, and the tests that need them say so.

SYSTEM_PACKAGES=(chromium chromium-driver haproxy dnsmasq-base iproute2)

# The packages of SYSTEM_PACKAGES whose command is not found.
missing_system_packages() {
    local package command
    for package in "${SYSTEM_PACKAGES[@]}"; do
        case "$package" in
        chromium-driver) command=chromedriver ;;
        dnsmasq-base) command=dnsmasq ;;
        iproute2) command=ip ;;
        *) command="$package" ;;
        esac
        # haproxy, dnsmasq and ip live in /usr/sbin, which is not on every PATH.
        if ! command -v "$command" >/dev/null && [ ! -x "/usr/sbin/$command" ]; then
            echo "$package"
        fi
    done
}

ensure_system_packages() {
    local missing
    mapfile -t missing < <(missing_system_packages)
    if [ "${#missing[@]}" = 0 ]; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing ${missing[*]} for the tests (apt-get)"
        if ! { apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                "${missing[@]}" >/dev/null; }; then
            echo "== apt-get could not install ${missing[*]}: the tests that need them will fail"
        fi
    else
        echo "== missing ${missing[*]}: the tests that need them will fail" \
            "(install: sudo apt-get install -y ${missing[*]})"
    fi
}
