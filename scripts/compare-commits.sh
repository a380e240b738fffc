#!/usr/bin/env bash
# Compare the CPU cost per request of two or more commits, deterministically:
# callgrind's count of the instructions one gunicorn worker executes per small
# request, (Ir[600 requests] - Ir[100 requests]) / 500, so start-up cancels out.
#
#   scripts/compare-commits.sh main HEAD            # 2 repetitions each, ~6-10 min
#   scripts/compare-commits.sh --reps 3 v1 v2 v3
#
# Each revision gets a detached git worktree under .loadtest/worktrees/ (reused
# by later runs) with its own .venv. Every process it starts runs in its own
# process group and is stopped on exit, error or Ctrl-C. Results: a table on
# stdout, JSON in .loadtest/compare.json, raw callgrind output and logs of the
# last run in .loadtest/compare-run/.
set -euo pipefail

usage() {
    cat <<'EOF_USAGE'
usage: scripts/compare-commits.sh [--reps N] [--jobs N] [--json FILE] REV_A REV_B [REV...]

  REV         anything git rev-parse understands (main, HEAD, 150bc5d, v1.2^);
              committed code only: uncommitted changes are not measured
  --reps N    repetitions per revision (default 2); runs alternate between revisions
  --jobs N    callgrind runs at a time (default 2; counts do not depend on it)
  --json FILE where to write the figures (default .loadtest/compare.json)

Needs valgrind and nginx (the backend). The % column is each revision's mean
against the first revision's.
EOF_USAGE
}

REPS=2
JOBS=2
JSON_FILE=""
REVS=()
ORIGINAL_ARGS=("$@")
readonly CACHE_DIR=.loadtest
readonly WORKTREES="$CACHE_DIR/worktrees"

positive_int() {  # positive_int OPTION VALUE: VALUE, or exit 2 saying what is wrong
    if [[ "${2-}" =~ ^[1-9][0-9]*$ ]]; then
        echo "$2"
    else
        echo "$1 needs a positive whole number (got '${2-}')" >&2
        exit 2
    fi
}

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --reps) REPS=$(positive_int "$1" "${2-}"); shift 2 ;;
            --jobs) JOBS=$(positive_int "$1" "${2-}"); shift 2 ;;
            --json) JSON_FILE=${2-}; [ -n "$JSON_FILE" ] || { usage >&2; exit 2; }; shift 2 ;;
            -h | --help) usage; exit 0 ;;
            -*) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
            *) REVS+=("$1"); shift ;;
        esac
    done
    if [ ${#REVS[@]} -lt 2 ]; then
        echo "give at least two revisions" >&2
        usage >&2
        exit 2
    fi
}

# progress, install_hint, find_tool (shared with loadtest.sh)
# shellcheck source=scripts/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

check_tools() {
    local tool missing=()
    for tool in valgrind nginx; do
        [ -n "$(find_tool "$tool")" ] || missing+=("$tool")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        progress "required and not installed: ${missing[*]}. Install with:"
        progress "    $(install_hint "${missing[*]}")"
        exit 2
    fi
    NGINX=$(find_tool nginx)
}

# prepare_worktree REV: a detached worktree at REV with its .venv; its path in WORKTREE.
prepare_worktree() {
    local rev=$1 commit
    if ! commit=$(git rev-parse --verify --quiet "$rev^{commit}"); then
        progress "not a commit: $rev"
        exit 2
    fi
    WORKTREE="$WORKTREES/${commit:0:12}"
    if [ ! -e "$WORKTREE/.git" ]; then
        progress "making a worktree of $rev (${commit:0:12}) in $WORKTREE ..."
        git worktree prune
        git worktree add --detach --force "$WORKTREE" "$commit" >/dev/null 2>&1 || {
            progress "git worktree add failed for $rev"
            exit 1
        }
    fi
    # A reused worktree is named by its commit; reset it in case someone edited it.
    git -C "$WORKTREE" checkout --quiet --detach --force "$commit"
    (
        cd "$WORKTREE"
        # shellcheck source=scripts/venv.sh
        source "$ROOT/scripts/venv.sh"
        ensure_venv ""
    )
    COMMIT=$commit
}

main() {
    parse_args "$@"
    if [ -n "$JSON_FILE" ] && [[ "$JSON_FILE" != /* ]]; then
        JSON_FILE="$PWD/$JSON_FILE"
    fi
    cd "$(dirname "$0")/.."
    ROOT=$PWD
    JSON_FILE=${JSON_FILE:-$CACHE_DIR/compare.json}
    check_tools
    # shellcheck source=scripts/venv.sh
    source scripts/venv.sh
    ensure_venv ""
    mkdir -p "$WORKTREES"

    local rev label checkouts=()
    for rev in "${REVS[@]}"; do
        prepare_worktree "$rev"
        label=$rev
        [[ "$COMMIT" == "$rev"* ]] || label="$rev@${COMMIT:0:8}"
        checkouts+=("$label=$ROOT/$WORKTREE")
    done

    progress "measuring ${REVS[*]}: $REPS repetitions each, $JOBS runs at a time (several minutes)..."
    # exec: Ctrl-C and kill reach the Python process, which stops every process group it started.
    exec .venv/bin/python -m scripts.bench.compare --reps "$REPS" --jobs "$JOBS" \
        --nginx "$NGINX" --out "$CACHE_DIR/compare-run" --json "$JSON_FILE" \
        --command "scripts/compare-commits.sh$(printf ' %s' "${ORIGINAL_ARGS[@]}")" \
        "${checkouts[@]}"
}

main "$@"
