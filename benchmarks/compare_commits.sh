#!/usr/bin/env bash
# Wall time of whole `python dqn.py` runs, this tree against an older commit, in alternating
# rounds one at a time (so that a change in the machine's load hits both alike):
#
#   bash benchmarks/compare_commits.sh OLD_COMMIT [ROUNDS] [dqn.py flags...]
#   bash benchmarks/compare_commits.sh c392e55 2 --env-id CartPole-v1 --eval-episodes 1
#   SEEDS=1 bash benchmarks/compare_commits.sh 79f5786 10 --env-id CartPole-v1  # round n: seed n
#
# Each run's line also says when it solved the env: the seconds of training (metrics.csv's
# time_s, from the start of training, where run.py counts from launch) at which its last 20
# episodes first averaged benchmarks/run.py's threshold. With SEEDS=1, round n runs seed n, so
# that the rounds differ by seed as well. The old commit is checked out into a temporary git
# worktree, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1; ROUNDS=${2:-2}; shift $(( $# >= 2 ? 2 : 1 ))
PYTHON=${PYTHON:-python3}
now() { "$PYTHON" -c 'import time; print(time.time())'; }  # (macOS date has no %N)
TMP=$(mktemp -d)
trap 'git worktree remove --force "$TMP/old" >/dev/null 2>&1 || true; rm -rf "$TMP"' EXIT
git worktree add --quiet --detach "$TMP/old" "$OLD"
solved() {  # "solved at S s (step N)" from the metrics.csv of the run in directory $1
    "$PYTHON" - "$1" <<'PY'
import csv, glob, sys
import numpy as np
sys.path.insert(0, "benchmarks")
from run import solve_index
try:
    path = glob.glob(sys.argv[1] + "/*/metrics.csv")[0]
    rows, env = list(csv.DictReader(open(path))), path.split("/")[-2].split("__")[0]
    n = solve_index(np.array([float(r["return"]) for r in rows]), env)
    print("not solved" if n is None else
          f"solved at {float(rows[n]['time_s']):.2f} s (step {rows[n]['step']})")
except (IndexError, KeyError, ValueError):  # no metrics.csv, or one without time_s
    print("solved at: n/a")
PY
}
for round in $(seq "$ROUNDS"); do
    seed=()
    [ "${SEEDS:-0}" = 1 ] && seed=(--seed "$round")
    for tree in "$TMP/old" "$PWD"; do
        rm -rf "$TMP/runs"
        start=$(now)
        "$PYTHON" "$tree/dqn.py" "$@" ${seed[@]+"${seed[@]}"} --output-dir "$TMP/runs" \
            > "$TMP/out.txt" 2>&1 || { tail -5 "$TMP/out.txt" >&2; exit 1; }
        end=$(now)
        name=$([ "$tree" = "$PWD" ] && echo "this tree" || echo "$OLD")
        echo "round $round, $name: $(echo "$end - $start" | bc) s; $(solved "$TMP/runs");" \
             "$(tail -2 "$TMP/out.txt" | head -1)"
    done
done
