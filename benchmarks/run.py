"""Train dqn.py on several envs and seeds, then write a results table and learning curves.

    python benchmarks/run.py                 # 4 envs x 5 seeds, default arguments
    python benchmarks/run.py --quick         # CartPole x 2 seeds, a few minutes
    python benchmarks/run.py --envs CartPole-v1 --seeds 5

Each run is a separate `python dqn.py` process (seeds in parallel, up to --jobs at once),
so wall times include Python and torch start-up, as a user sees them. Outputs go to
--out: runs/ (each run's metrics.csv and summary.json), results.md, results.json and,
where matplotlib is installed, curves.png.
"""

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A run "solves" its env when the mean of its last 20 training episodes reaches this.
THRESHOLDS = {"CartPole-v1": 475, "Acrobot-v1": -100, "MountainCar-v0": -110, "LunarLander-v3": 200}
WINDOW = 20


def run_one(env_id: str, seed: int, out: str, extra: list) -> dict:
    """Runs dqn.py in a child process; returns its launch time, exit code and peak memory."""
    run_root = os.path.join(out, "runs", env_id, f"seed{seed}")
    os.makedirs(run_root, exist_ok=True)
    log = open(os.path.join(run_root, "stdout.txt"), "w")
    launched = time.time()
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "dqn.py"), "--env-id", env_id,
                             "--seed", str(seed), "--output-dir", run_root, *extra],
                            stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{env_id} seed {seed} failed: see {log.name}")
    (run_dir,) = [os.path.join(run_root, d) for d in os.listdir(run_root)
                  if os.path.isdir(os.path.join(run_root, d))]
    return {"env_id": env_id, "seed": seed, "run_dir": run_dir, "launched": launched,
            "peak_rss_mb": usage.ru_maxrss / 1024}  # ru_maxrss is in KiB on Linux


def analyse(run: dict) -> dict:
    """Per-run figures from metrics.csv and summary.json."""
    with open(os.path.join(run["run_dir"], "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(run["run_dir"], "summary.json")) as f:
        summary = json.load(f)
    steps = np.array([int(r["step"]) for r in rows])
    # seconds since the process was launched (CSV times count from train() start)
    seconds = np.array([float(r["time_s"]) for r in rows]) + summary["start_unix_time"] - run["launched"]
    returns = np.array([float(r["return"]) for r in rows])
    trailing = np.array([returns[max(0, i - WINDOW + 1):i + 1].mean() for i in range(len(returns))])
    threshold = THRESHOLDS.get(run["env_id"])
    solved = np.flatnonzero((trailing >= threshold) & (np.arange(len(returns)) >= WINDOW - 1)) \
        if threshold is not None else np.array([], dtype=int)
    first = solved[0] if len(solved) else None
    return {**run,
            "steps": steps.tolist(), "seconds": seconds.tolist(), "returns": returns.tolist(),
            "eval_mean": float(np.mean(summary["eval_returns"])),
            "total_steps": int(summary["args"]["total_timesteps"]),
            "steps_per_s": float(steps[-1] / summary["train_seconds"]),
            "wall_s": float(summary["start_unix_time"] + summary["train_seconds"] - run["launched"]),
            "solve_step": None if first is None else int(steps[first]),
            "solve_s": None if first is None else float(seconds[first]),
            "final_trailing": float(trailing[-1]),
            "min_trailing_after_solve": None if first is None else float(trailing[first:].min())}


def fmt(values, digits=0):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}" if len(values) > 1 \
        else f"{values[0]:.{digits}f}"


def table(results: list, envs: list) -> str:
    lines = ["| env | seeds | greedy eval return | trailing-20 at end | solved | steps to solve | "
             "seconds to solve (median) | steps/s | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for env_id in envs:
        rs = [r for r in results if r["env_id"] == env_id]
        solve_s = [r["solve_s"] for r in rs if r["solve_s"] is not None]
        lines.append(
            f"| {env_id} (threshold {THRESHOLDS.get(env_id, '-')}) | {len(rs)} | "
            f"{fmt([r['eval_mean'] for r in rs], 1)} | {fmt([r['final_trailing'] for r in rs], 1)} | "
            f"{len(solve_s)}/{len(rs)} | {fmt([r['solve_step'] for r in rs])} | "
            f"{f'{np.median(solve_s):.1f}' if solve_s else '-'} | "
            f"{fmt([r['steps_per_s'] for r in rs])} | {fmt([r['peak_rss_mb'] for r in rs])} |")
    return "\n".join(lines)


def plot(results: list, envs: list, path: str) -> bool:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -r benchmarks/requirements.txt)")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(envs), figsize=(4.5 * len(envs), 7), squeeze=False)
    for col, env_id in enumerate(envs):
        rs = [r for r in results if r["env_id"] == env_id]
        for row, key, label in [(0, "steps", "env steps"), (1, "seconds", "seconds since launch")]:
            ax = axes[row][col]
            end = max(r[key][-1] for r in rs)
            grid = np.linspace(0, end, 200)
            # each run's trailing-20 return, held constant between episode ends
            curves = []
            for r in rs:
                ret = np.array(r["returns"])
                trail = np.array([ret[max(0, i - WINDOW + 1):i + 1].mean() for i in range(len(ret))])
                curves.append(np.interp(grid, r[key], trail, left=np.nan))
            curves = np.array(curves)
            grid, curves = grid[~np.isnan(curves).all(0)], curves[:, ~np.isnan(curves).all(0)]
            mean = np.nanmean(curves, axis=0)
            ax.plot(grid, mean, label="dqn.py")
            ax.fill_between(grid, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), alpha=0.25)
            if env_id in THRESHOLDS:
                ax.axhline(THRESHOLDS[env_id], color="gray", linestyle=":", linewidth=1)
            ax.set_xlabel(label)
            ax.set_title(env_id)
            ax.set_ylabel(f"training return (last {WINDOW})")
    fig.suptitle(f"mean and min-max over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return True


def update_readme(section: str) -> None:
    path = os.path.join(REPO, "README.md")
    with open(path) as f:
        text = f.read()
    start, end = "<!-- results:start -->\n", "<!-- results:end -->"
    head, rest = text.split(start)
    _, tail = rest.split(end)
    with open(path, "w") as f:
        f.write(head + start + section + end + tail)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", default=list(THRESHOLDS))
    parser.add_argument("--seeds", type=int, default=5, help="seeds 1..N per env")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="runs at once")
    parser.add_argument("--quick", action="store_true", help="CartPole-v1, 2 seeds")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--update-readme", action="store_true",
                        help="replace the README's results section with this run's table")
    parser.add_argument("--dqn-args", nargs=argparse.REMAINDER, default=[],
                        help="extra flags for dqn.py, e.g. --dqn-args --total-timesteps 20000")
    opts = parser.parse_args()
    if opts.quick:
        opts.envs, opts.seeds = ["CartPole-v1"], 2

    extra = ["--no-save-model", *opts.dqn_args]
    jobs = [(env_id, seed) for env_id in opts.envs for seed in range(1, opts.seeds + 1)]
    print(f"{len(jobs)} runs, {opts.jobs} at a time, outputs in {opts.out}")
    with ThreadPoolExecutor(opts.jobs) as pool:
        runs = list(pool.map(lambda job: run_one(*job, opts.out, extra), jobs))
    results = [analyse(r) for r in runs]
    for r in results:
        print(f"{r['env_id']:>16} seed {r['seed']}: eval {r['eval_mean']:8.1f}  "
              f"solved at {r['solve_step']} steps / {r['solve_s'] and round(r['solve_s'], 1)} s  "
              f"trailing-20 at end {r['final_trailing']:.1f} (lowest after solving "
              f"{r['min_trailing_after_solve'] and round(r['min_trailing_after_solve'], 1)})")

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
              f"{platform.system()}, Python {platform.python_version()}"
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    md = (f"Produced by `{command.strip()}` on {time.strftime('%Y-%m-%d')} ({machine}), "
          f"{opts.jobs} runs at a time.\n\n"
          f"Returns are undiscounted episode returns. 'solved' is the first time the mean of the "
          f"last {WINDOW} training episodes (epsilon-greedy) reaches the threshold; seconds count "
          f"from process launch. Greedy eval: 10 episodes after training.\n\n"
          + table(results, opts.envs) + "\n")
    os.makedirs(opts.out, exist_ok=True)
    with open(os.path.join(opts.out, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(opts.out, "results.json"), "w") as f:
        json.dump(results, f)
    plotted = plot(results, opts.envs, os.path.join(opts.out, "curves.png"))
    if opts.update_readme:
        update_readme(md + ("\n![learning curves](benchmarks/results/curves.png)\n" if plotted else ""))
    print("\n" + md)
    print(f"wrote {opts.out}/results.md" + (" and curves.png" if plotted else ""))


if __name__ == "__main__":
    main()
