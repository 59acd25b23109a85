#!/usr/bin/env bash
# Wall time of whole `python dqn.py` runs, this tree against an older commit, in alternating
# rounds one at a time (so that a change in the machine's load hits both alike):
#
#   bash benchmarks/compare_commits.sh OLD_COMMIT [ROUNDS] [dqn.py flags...]
#   bash benchmarks/compare_commits.sh c392e55 2 --env-id CartPole-v1 --eval-episodes 1
#
# The old commit is checked out into a temporary git worktree, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1; ROUNDS=${2:-2}; shift $(( $# >= 2 ? 2 : 1 ))
PYTHON=${PYTHON:-python3}
now() { "$PYTHON" -c 'import time; print(time.time())'; }  # (macOS date has no %N)
TMP=$(mktemp -d)
trap 'git worktree remove --force "$TMP/old" >/dev/null 2>&1 || true; rm -rf "$TMP"' EXIT
git worktree add --quiet --detach "$TMP/old" "$OLD"
for round in $(seq "$ROUNDS"); do
    for tree in "$TMP/old" "$PWD"; do
        start=$(now)
        "$PYTHON" "$tree/dqn.py" "$@" --output-dir "$TMP/runs" > "$TMP/out.txt" 2>&1 ||
            { tail -5 "$TMP/out.txt" >&2; exit 1; }
        end=$(now)
        name=$([ "$tree" = "$PWD" ] && echo "this tree" || echo "$OLD")
        echo "round $round, $name: $(echo "$end - $start" | bc) s; $(tail -2 "$TMP/out.txt" | head -1)"
    done
done
