"""Benchmark dqn.py, beside Stable-Baselines3's DQN, over envs and seeds: table and curves.

    python benchmarks/run.py                 # 4 envs x 5 seeds, default arguments
    python benchmarks/run.py --quick         # CartPole x 2 seeds (x 2 implementations), minutes
    python benchmarks/run.py --envs CartPole-v1 --seeds 5
    python benchmarks/run.py --sb3-python .venv-sb3/bin/python   # SB3 from another venv

Each run is a separate process (seeds in parallel, up to --jobs at once), so wall times
include Python and torch start-up, as a user sees them. Where Stable-Baselines3 is installed
(or --sb3-python names a Python that has it), every env and seed is also trained with SB3's
DQN and the rl-baselines3-zoo settings for that env; --no-sb3 leaves it out.

Neither implementation is measured by its own logging: benchmarks/train_one.py starts each
run (`python dqn.py`'s main() for dqn.py) with its envs wrapped in the recorder of
benchmarks/episode_log.py, which writes every training episode's env step, seconds since
the process was launched, and return. Outputs go to --out: runs/<impl>/<env>/seed<N>/
(episodes.csv, summary.json, stdout.txt), results.md, results.json and, where matplotlib
is installed, curves.png.
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

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
# A run "solves" its env when the mean of its last 20 training episodes reaches this.
THRESHOLDS = {"CartPole-v1": 475, "Acrobot-v1": -100, "MountainCar-v0": -110, "LunarLander-v3": 200}
WINDOW = 20
IMPLS = {"dqn": "dqn.py", "sb3": "SB3 DQN (rl-zoo)"}
# Quoted, not measured here: CleanRL's dqn.py, 500k steps, 3 seeds.
CLEANRL = {"CartPole-v1": "488.69 ± 16.11", "Acrobot-v1": "-91.54 ± 7.20", "MountainCar-v0": "-194.95 ± 8.48"}
CLEANRL_SOURCE = "https://docs.cleanrl.dev/rl-algorithms/dqn/"


def sb3_version(python: str) -> str | None:
    """Stable-Baselines3's version in `python`'s environment, or None where it is not installed."""
    probe = ("import importlib.metadata as m, importlib.util as u\n"
             "print(m.version('stable-baselines3') if u.find_spec('stable_baselines3') else '')")
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def run_one(impl: str, env_id: str, seed: int, out: str, python: str, extra: list, reuse=False) -> dict:
    """Runs one training in a child process; returns its launch time, exit code and peak memory.
    With reuse, a run already finished in `out` is read back instead of run again."""
    run_root = os.path.join(out, "runs", impl, env_id, f"seed{seed}")
    if reuse and os.path.exists(os.path.join(run_root, "run.json")):  # written when the run finished
        with open(os.path.join(run_root, "run.json")) as f:
            return json.load(f)
    os.makedirs(run_root, exist_ok=True)
    log = open(os.path.join(run_root, "stdout.txt"), "w")
    launched = time.time()
    proc = subprocess.Popen([python, os.path.join(HERE, "train_one.py"), "--impl", impl,
                             "--env-id", env_id, "--seed", str(seed), "--out", run_root,
                             "--launched", repr(launched), *extra],
                            stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    ended = time.time()
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{IMPLS[impl]} {env_id} seed {seed} failed: see {log.name}")
    run = {"impl": impl, "env_id": env_id, "seed": seed, "run_dir": run_root, "launched": launched,
           "wall_s": ended - launched,
           "peak_rss_mb": usage.ru_maxrss / 1024}  # ru_maxrss is in KiB on Linux
    with open(os.path.join(run_root, "run.json"), "w") as f:
        json.dump(run, f)
    return run


def trailing_mean(returns: np.ndarray) -> np.ndarray:
    return np.array([returns[max(0, i - WINDOW + 1):i + 1].mean() for i in range(len(returns))])


def analyse(run: dict) -> dict:
    """Per-run figures from the recorder's episodes.csv and the driver's summary.json."""
    with open(os.path.join(run["run_dir"], "episodes.csv")) as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(run["run_dir"], "summary.json")) as f:
        summary = json.load(f)
    steps = np.array([int(r["step"]) for r in rows], dtype=np.int64)
    seconds = np.array([float(r["seconds"]) for r in rows])  # since the process was launched
    returns = np.array([float(r["return"]) for r in rows])
    trailing = trailing_mean(returns)
    threshold = THRESHOLDS.get(run["env_id"])
    solved = np.flatnonzero((trailing >= threshold) & (np.arange(len(returns)) >= WINDOW - 1)) \
        if threshold is not None else np.array([], dtype=int)
    first = solved[0] if len(solved) else None
    loop_s = (summary["last_step_s"] or 0) - (summary["first_step_s"] or 0)
    return {**run,
            "steps": steps.tolist(), "seconds": seconds.tolist(), "returns": returns.tolist(),
            "eval_mean": float(np.mean(summary["eval_returns"])) if summary["eval_returns"] else None,
            "total_steps": int(summary["env_steps"]),
            # env steps over the time from the first env step to the last: the training loop,
            # learning included; start-up and the final evaluation left out
            "steps_per_s": float(summary["env_steps"] / loop_s) if loop_s > 0 else None,
            "settings": summary["settings"],
            "solve_step": None if first is None else int(steps[first]),
            "solve_s": None if first is None else float(seconds[first]),
            "final_trailing": float(trailing[-1]) if len(trailing) else None,
            "min_trailing_after_solve": None if first is None else float(trailing[first:].min())}


def fmt(values, digits=0):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}" if len(values) > 1 \
        else f"{values[0]:.{digits}f}"


def table(results: list, envs: list, impls: list) -> str:
    lines = ["| implementation | env | seeds | env steps | greedy eval return | trailing-20 at end | "
             "solved | steps to solve | seconds to solve (median) | steps/s | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for env_id in envs:
        for impl in impls:
            rs = [r for r in results if r["env_id"] == env_id and r["impl"] == impl]
            if not rs:
                continue
            solve_s = [r["solve_s"] for r in rs if r["solve_s"] is not None]
            lines.append(
                f"| {IMPLS[impl]} | {env_id} (threshold {THRESHOLDS.get(env_id, '-')}) | {len(rs)} | "
                f"{fmt([r['total_steps'] for r in rs])} | "
                f"{fmt([r['eval_mean'] for r in rs], 1)} | {fmt([r['final_trailing'] for r in rs], 1)} | "
                f"{len(solve_s)}/{len(rs)} | {fmt([r['solve_step'] for r in rs])} | "
                f"{f'{np.median(solve_s):.1f}' if solve_s else '-'} | "
                f"{fmt([r['steps_per_s'] for r in rs])} | {fmt([r['peak_rss_mb'] for r in rs])} |")
    return "\n".join(lines)


def plot(results: list, envs: list, impls: list, path: str) -> bool:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -r benchmarks/requirements.txt)")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(envs), figsize=(4.5 * len(envs), 7), squeeze=False)
    for col, env_id in enumerate(envs):
        for row, key, label in [(0, "steps", "env steps"), (1, "seconds", "seconds since launch")]:
            ax = axes[row][col]
            for n, impl in enumerate(impls):
                rs = [r for r in results if r["env_id"] == env_id and r["impl"] == impl and r["returns"]]
                if not rs:
                    continue
                grid = np.linspace(0, max(r[key][-1] for r in rs), 200)
                # each run's trailing-20 return, held constant between episode ends
                curves = np.array([np.interp(grid, r[key], trailing_mean(np.array(r["returns"])),
                                             left=np.nan) for r in rs])
                keep = ~np.isnan(curves).all(0)
                grid, curves = grid[keep], curves[:, keep]
                color = f"C{n}"
                ax.plot(grid, np.nanmean(curves, axis=0), color=color, label=IMPLS[impl])
                ax.fill_between(grid, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0),
                                color=color, alpha=0.25, linewidth=0)
            if env_id in THRESHOLDS:
                ax.axhline(THRESHOLDS[env_id], color="gray", linestyle=":", linewidth=1)
            ax.set_xlabel(label)
            ax.set_title(env_id)
            ax.set_ylabel(f"training return (last {WINDOW})")
    axes[0][0].legend(loc="lower right", fontsize="small")
    fig.suptitle("mean and min-max over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
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


def notes(envs: list, sb3: str | None, sb3_note: str, total_timesteps: int | None) -> str:
    """What the table's figures are, the peer's settings, and the quoted CleanRL figures."""
    lines = [f"Returns are undiscounted episode returns, recorded for every implementation by the "
             f"same gymnasium wrapper (benchmarks/episode_log.py), not by the implementation's own "
             f"logging. 'solved' is the first time the mean of the last {WINDOW} training episodes "
             f"(epsilon-greedy) reaches the threshold; seconds count from process launch. Greedy "
             f"eval: 10 episodes after training. steps/s: env steps over the time from the first "
             f"env step to the last (learning included, start-up and evaluation not).", ""]
    if sb3:
        lines += [f"SB3 DQN: Stable-Baselines3 {sb3} with the rl-baselines3-zoo settings for each env "
                  f"(hyperparams/dqn.yml, LunarLander-v3 with LunarLander-v2's), 1 env, CPU, 1 torch "
                  f"thread (as dqn.py), "
                  + (f"{total_timesteps} env steps (--total-timesteps). " if total_timesteps else
                     "the zoo's training length (n_timesteps). ")
                  + "dqn.py: its presets" + (f", {total_timesteps} env steps." if total_timesteps else "."),
                  ""]
    else:
        lines += [sb3_note, ""]
    quoted = [f"{env_id} {CLEANRL[env_id]}" for env_id in envs if env_id in CLEANRL]
    if quoted:
        lines += [f"For reference, quoted and not measured here: CleanRL's DQN, 500k steps, 3 seeds, "
                  f"episodic return: {'; '.join(quoted)} (source: {CLEANRL_SOURCE})."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", default=None, help=f"default: {' '.join(THRESHOLDS)}")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 1..N per env (default 5)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="runs at once")
    parser.add_argument("--quick", action="store_true",
                        help="CartPole-v1, 2 seeds (unless --envs or --seeds say otherwise)")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--total-timesteps", type=int, default=None,
                        help="env steps for every run, of both implementations "
                             "(default: dqn.py's presets, and rl-zoo's n_timesteps for SB3)")
    parser.add_argument("--no-sb3", action="store_true", help="leave Stable-Baselines3 out")
    parser.add_argument("--sb3-python", default=None,
                        help="a Python interpreter whose environment has stable-baselines3 "
                             "(default: this one)")
    parser.add_argument("--update-readme", action="store_true",
                        help="replace the README's results section with this run's table")
    parser.add_argument("--reuse", action="store_true",
                        help="read back the runs already finished in --out instead of running them again")
    parser.add_argument("--dqn-args", nargs=argparse.REMAINDER, default=[],
                        help="extra flags for dqn.py, e.g. --dqn-args --total-timesteps 20000")
    opts = parser.parse_args()
    envs = opts.envs or (["CartPole-v1"] if opts.quick else list(THRESHOLDS))
    seeds = opts.seeds or (2 if opts.quick else 5)

    sb3, sb3_note = None, "Stable-Baselines3 left out (--no-sb3)."
    if not opts.no_sb3:
        sb3 = sb3_version(opts.sb3_python or sys.executable)
        if sb3 is None and opts.sb3_python:
            parser.error(f"--sb3-python {opts.sb3_python}: stable-baselines3 is not importable there")
        if sb3 is None:
            sb3_note = ("Stable-Baselines3 is not installed, so dqn.py ran alone "
                        "(pip install -r benchmarks/requirements.txt, or --sb3-python PATH).")
    impls = ["dqn"] + (["sb3"] if sb3 else [])
    print(f"Stable-Baselines3 {sb3}: trained beside dqn.py" if sb3 else sb3_note)

    steps = [] if opts.total_timesteps is None else ["--total-timesteps", str(opts.total_timesteps)]
    pythons = {"dqn": sys.executable, "sb3": opts.sb3_python or sys.executable}
    extra = {"dqn": [*steps, "--no-save-model", *opts.dqn_args], "sb3": steps}
    jobs = [(impl, env_id, seed) for env_id in envs for seed in range(1, seeds + 1) for impl in impls]
    print(f"{len(jobs)} runs, {opts.jobs} at a time, outputs in {opts.out}")
    with ThreadPoolExecutor(opts.jobs) as pool:
        runs = list(pool.map(lambda job: run_one(*job, opts.out, pythons[job[0]], extra[job[0]], opts.reuse),
                             jobs))
    results = [analyse(r) for r in runs]
    rnd = lambda x: x if x is None else round(x, 1)  # noqa: E731
    for r in results:
        print(f"{IMPLS[r['impl']]:>16} {r['env_id']:>16} seed {r['seed']}: eval {rnd(r['eval_mean'])}  "
              f"solved at {r['solve_step']} steps / {rnd(r['solve_s'])} s  "
              f"trailing-20 at end {rnd(r['final_trailing'])} (lowest after solving "
              f"{rnd(r['min_trailing_after_solve'])})")

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
              f"{platform.system()}, Python {platform.python_version()}"
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    md = (f"Produced by `{command.strip()}` on {time.strftime('%Y-%m-%d')} ({machine}), "
          f"{opts.jobs} runs at a time.\n\n"
          + table(results, envs, impls) + "\n\n" + notes(envs, sb3, sb3_note, opts.total_timesteps))
    os.makedirs(opts.out, exist_ok=True)
    with open(os.path.join(opts.out, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(opts.out, "results.json"), "w") as f:
        json.dump(results, f)
    plotted = plot(results, envs, impls, os.path.join(opts.out, "curves.png"))
    if opts.update_readme:
        update_readme(md + ("\n![learning curves](benchmarks/results/curves.png)\n" if plotted else ""))
    print("\n" + md)
    print(f"wrote {opts.out}/results.md" + (" and curves.png" if plotted else ""))


if __name__ == "__main__":
    main()
