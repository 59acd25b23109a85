"""Benchmark dqn.py, beside Stable-Baselines3's DQN, over envs, seeds and flags: table and curves.

    python benchmarks/run.py                 # 4 envs x 5 seeds, default arguments
    python benchmarks/run.py --quick         # CartPole x 2 seeds (x 2 implementations), minutes
    python benchmarks/run.py --envs CartPole-v1 --seeds 5 --grid learning-rate=1e-3,3e-4 n-step=1,3
    python benchmarks/run.py --ray           # the same runs as Ray tasks, Ray started on this machine
    python benchmarks/run.py --ray auto      # ... on a running Ray cluster (README: "Sweeps on a cluster")
    python benchmarks/run.py --sb3-python .venv-sb3/bin/python   # SB3 from another venv

A sweep is envs x seeds x every combination of the --grid flags, each combination its own rows
and curves. Every run is a separate process (benchmarks/train_one.py), so wall times include
Python and torch start-up, as a user sees them. Runs go up to --jobs at once on this machine,
or, with --ray, one Ray task each (one CPU, and --gpus-per-run for Atari): the task trains in
a temp dir on its node and returns the run's files, which this process writes. Where
Stable-Baselines3 is installed (or --sb3-python names a Python that has it), every env and seed
that rl-baselines3-zoo has settings for is also trained with SB3's DQN; --no-sb3 leaves it out.

Neither implementation is measured by its own logging: train_one.py starts each run
(`python dqn.py`'s main() for dqn.py) with its envs wrapped in the recorder of
benchmarks/episode_log.py, which writes every training episode's env step, seconds since
the process was launched, and return. Outputs go to --out: runs/<impl>[--flag=value...]/<env>/
seed<N>/ (episodes.csv, summary.json, stdout.txt, run.json), results.md, results.json and,
where matplotlib is installed, curves.png. A run that fails is a row entry with its error, not
a crash of the sweep; the runner then exits with status 1.

Per env the table gives the final greedy evaluation as mean ± std over seeds and, as Agarwal
et al. 2021 ("Deep RL at the Edge of the Statistical Precipice") recommend, its interquartile
mean (IQM) with a 95% stratified bootstrap confidence interval (rliable); across envs, the IQM
and mean of scores normalised from a random policy's (0) to the env's threshold (1).
"""

import argparse
import csv
import itertools
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from train_one import SB3_ZOO  # noqa: E402  (the envs SB3 has rl-zoo settings for)

# A run "solves" its env when the mean of its last 20 training episodes reaches this.
THRESHOLDS = {"CartPole-v1": 475, "Acrobot-v1": -100, "MountainCar-v0": -110, "LunarLander-v3": 200}
# Mean return of uniformly random actions over 100 episodes (episode seeds 0..99), measured
# by `python benchmarks/run.py --random-scores` (random_policy_score below): the 0 of the
# normalised score, the threshold its 1.
RANDOM_SCORES = {"CartPole-v1": 25.0, "Acrobot-v1": -500.0, "MountainCar-v0": -200.0, "LunarLander-v3": -191.0}
WINDOW = 20
IMPLS = {"dqn": "dqn.py", "dqn_atari": "dqn_atari.py", "sb3": "SB3 DQN (rl-zoo)"}
# Bootstrap resamples for each confidence interval: about 1 s each here (rliable's default,
# 50,000, takes 5 s, for intervals that differ in the second digit).
BOOTSTRAP_REPS = 10_000
RAY_RETRIES = 3  # times Ray runs a task again when its worker or node dies
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


def random_policy_score(env_id: str, episodes: int = 100) -> float:
    """Mean return of uniformly random actions, episode i seeded with i: RANDOM_SCORES."""
    import gymnasium as gym

    env, returns = gym.make(env_id), []
    for episode in range(episodes):
        env.reset(seed=episode)
        env.action_space.seed(episode)
        done, episode_return = False, 0.0
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            episode_return += float(reward)
            done = terminated or truncated
        returns.append(episode_return)
    env.close()
    return float(np.mean(returns))


# ----------------------------------------------------------------------------
# The sweep: which runs, and one function that trains a run and returns its files


def parse_grid(items: list) -> list:
    """["learning-rate=1e-3,3e-4", "n-step=1,3"] -> every combination, as lists of (flag, value)."""
    axes = []
    for item in items:
        flag, sep, values = item.partition("=")
        if not sep or not flag or not values:
            raise ValueError(f"--grid {item!r}: expected FLAG=VALUE[,VALUE...], e.g. n-step=1,3")
        axes.append([(flag.removeprefix("--"), value) for value in values.split(",")])
    return [list(combination) for combination in itertools.product(*axes)]


def plan_runs(envs: list, seeds: int, grid: list, sb3: bool, sb3_python: str | None) -> list:
    """One dict per run: what train_one.py trains, and its name in the table and under runs/."""
    runs = []
    for env_id in envs:
        impl = "dqn_atari" if atari_id(env_id) else "dqn"
        variants = [(impl, flags) for flags in grid]
        if sb3 and env_id in SB3_ZOO:  # the peer, once per env and seed: the grid is dqn.py's
            variants.append(("sb3", []))
        for seed in range(1, seeds + 1):
            for impl, flags in variants:
                runs.append({
                    "impl": impl, "env_id": env_id, "seed": seed,
                    "flags": [arg for flag, value in flags for arg in (f"--{flag}", value)],
                    "variant": impl + "".join(f"--{flag}={value}".replace("/", "_").replace(":", "_")
                                              for flag, value in flags),
                    "label": " ".join([IMPLS[impl]] + [f"--{flag} {value}" for flag, value in flags]),
                    "python": sb3_python if impl == "sb3" else None})  # None: the runner's own
    return runs


def atari_id(env_id: str) -> bool:
    """An id of ale-py's (ALE/Pong-v5, Pong-v4, PongNoFrameskip-v4): dqn_atari.py trains it."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    import dqn  # (dqn.py decides; imported here, as it imports torch)
    return dqn.atari_spec(env_id) is not None


def train_run(run: dict, repo: str, extra: list) -> dict:
    """Trains one run (benchmarks/train_one.py in a child process, in a fresh temp dir) and
    returns its record and the bytes of every file it wrote: the same on this machine and as a
    Ray task on another, where `repo` is the copy of the code that Ray brought there.

    A run that fails is returned, not raised: its record has the exit code and the error the
    run printed."""
    with tempfile.TemporaryDirectory(prefix="dqn-run-") as tmp:
        launched = time.time()
        command = [run["python"] or sys.executable, os.path.join(repo, "benchmarks", "train_one.py"),
                   "--impl", run["impl"], "--env-id", run["env_id"], "--seed", str(run["seed"]),
                   "--out", tmp, "--launched", repr(launched), *extra, *run["flags"]]
        with open(os.path.join(tmp, "stdout.txt"), "w") as log:
            # (UTF-8: tyro then draws the box whose first line error_of reads, on Windows too)
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=repo,
                                    env={**os.environ, "PYTHONIOENCODING": "utf-8"})
            if hasattr(os, "wait4"):  # (Unix: with the child's peak memory)
                _, status, usage = os.wait4(proc.pid, 0)
                returncode = os.waitstatus_to_exitcode(status)
                # ru_maxrss: KiB on Linux, bytes on macOS
                peak_mb = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
            else:  # Windows
                returncode, peak_mb = proc.wait(), None
        files = {}
        for folder, _, names in os.walk(tmp):
            for name in names:
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    files[os.path.relpath(path, tmp)] = f.read()
    printed = files["stdout.txt"].decode(errors="replace").strip().splitlines()
    record = {**run, "extra": extra, "launched": launched, "wall_s": time.time() - launched,
              "peak_rss_mb": peak_mb,
              "node": platform.node(), "returncode": returncode,
              "error": None if returncode == 0 else f"exit {returncode}: {error_of(printed)}"}
    return {"record": record, "files": files}


def error_of(printed: list) -> str:
    """What a failed run printed as its error: its last line, or the first line of the box
    in which tyro reports a bad flag or value."""
    if printed and printed[-1].startswith("╰"):
        top = max(i for i, line in enumerate(printed) if line.startswith("╭"))
        return printed[top + 1].strip(" │")
    return printed[-1] if printed else ""


def run_dir(out: str, run: dict) -> str:
    return os.path.join(out, "runs", run["variant"], run["env_id"], f"seed{run['seed']}")


def save_run(out: str, outcome: dict) -> dict:
    """Writes a run's files, from whichever machine trained it, and its record as run.json."""
    record = outcome["record"]
    root = run_dir(out, record)
    shutil.rmtree(root, ignore_errors=True)  # a run dir holds one run, not the leftovers of another
    os.makedirs(root)
    for name, data in outcome["files"].items():
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
    record = {**record, "run_dir": root}
    with open(os.path.join(root, "run.json"), "w") as f:
        json.dump(record, f)
    return record


def finished_run(out: str, run: dict, extra: list) -> dict | None:
    """The record of this run if it already finished in `out` with the same flags (for --reuse);
    a failed or damaged run is not, nor one made with other flags (`extra`: --total-timesteps,
    --dqn-args)."""
    files = [os.path.join(run_dir(out, run), name) for name in ("episodes.csv", "summary.json")]
    try:
        with open(os.path.join(run_dir(out, run), "run.json")) as f:
            record = json.load(f)
    except (OSError, ValueError):  # none, or not a record
        return None
    if not isinstance(record, dict) or record.get("error") or not all(map(os.path.exists, files)):
        return None
    if record.get("extra") != extra:  # (a record written before "extra" was: trained again)
        return None
    return {**run, **record, "error": None, "run_dir": run_dir(out, run)}  # (older run.json: no "error")


def failed(run: dict, error: str) -> dict:
    """A run that produced no files: Ray gave up on its task."""
    return {"record": {**run, "returncode": None, "error": error}, "files": {}}


def report(done: int, total: int, record: dict) -> None:
    where = f" on {record['node']}" if record.get("node") else ""
    outcome = f"FAILED ({record['error']})" if record["error"] else f"done in {record['wall_s']:.0f} s{where}"
    print(f"[{done}/{total}] {record['label']} {record['env_id']} seed {record['seed']}: {outcome}", flush=True)


def sweep_here(runs: list, out: str, extra: dict, jobs: int) -> list:
    """Trains the runs on this machine, `jobs` at a time; returns their records."""
    finished, interrupted = [], threading.Event()

    def train_and_save(run):
        outcome = train_run(run, REPO, extra[run["impl"]])
        if interrupted.is_set() or outcome["record"]["returncode"] in (130, 143, -2, -15):
            record = {**outcome["record"], "error": "interrupted"}  # no result: not kept
        else:
            record = save_run(out, outcome)
        finished.append(record)
        report(len(finished), len(runs), record)
        return record

    pool = ThreadPoolExecutor(jobs)
    try:
        return list(pool.map(train_and_save, runs))
    except KeyboardInterrupt:  # Ctrl-C (the runs get it too): start no other run, keep none
        interrupted.set()
        pool.shutdown(cancel_futures=True)
        print("interrupted: the runs finished before are kept, none that was running",
              file=sys.stderr)
        sys.exit(130)
    finally:
        pool.shutdown()


def sweep_ray(runs: list, out: str, extra: dict, address: str, cpus_per_run: float, gpus_per_run: float) -> list:
    """Trains each run as a Ray task, on whichever node has a free CPU (and GPU share, for
    Atari); writes each run here as its task returns, and returns their records."""
    import ray

    # No shared file system: Ray copies the repo (less .gitignore'd files) to each node, as
    # the task's working directory, and runs the task with the Python that node's Ray runs.
    runtime_env = {"working_dir": REPO,
                   "excludes": [".git", ".venv*", "runs", "benchmarks/results", "__pycache__"]}
    if address:
        ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=runtime_env,
                 logging_level=logging.WARNING)
    cluster, nodes = ray.cluster_resources(), [node for node in ray.nodes() if node["Alive"]]
    print(f"Ray: {len(nodes)} node(s), {cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs")
    if gpus_per_run and not cluster.get("GPU") and any(run["impl"] == "dqn_atari" for run in runs):
        ray.shutdown()  # else the Atari runs would wait for ever for a GPU
        sys.exit("error: --gpus-per-run: this Ray cluster has no GPU")

    # A task whose worker or node dies is run again, up to RAY_RETRIES times; an exception in
    # the task is not retried (a run that fails returns its error instead of raising).
    @ray.remote(max_retries=RAY_RETRIES)
    def train_task(run, extra):
        return train_run(run, os.getcwd(), extra)  # the working directory: Ray's copy of the repo

    tasks = {train_task.options(num_cpus=cpus_per_run,
                                num_gpus=gpus_per_run if run["impl"] == "dqn_atari" else 0)
             .remote(run, extra[run["impl"]]): run for run in runs}
    pending, records = list(tasks), []
    try:
        while pending:
            [ref], pending = ray.wait(pending, num_returns=1)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as e:  # its worker died more than RAY_RETRIES times, ...
                lines = str(e).strip().splitlines()
                outcome = failed(tasks[ref], f"{type(e).__name__}: {lines[-1] if lines else ''}")
            records.append(save_run(out, outcome))
            report(len(records), len(runs), records[-1])
    except KeyboardInterrupt:  # Ctrl-C: stop every run still going; the finished ones are written
        for ref in pending:
            ray.cancel(ref, force=True)
        print(f"interrupted: cancelled the {len(pending)} runs not finished", file=sys.stderr)
        sys.exit(130)
    finally:
        ray.shutdown()
    return records


# ----------------------------------------------------------------------------
# Figures per run, per env, across envs


def trailing_mean(returns: np.ndarray) -> np.ndarray:
    return np.array([returns[max(0, i - WINDOW + 1):i + 1].mean() for i in range(len(returns))])


def solve_index(returns: np.ndarray, env_id: str) -> int | None:
    """The episode at which the last WINDOW episodes first average the env's threshold (the
    index into `returns`), or None: never, or an env without a threshold."""
    threshold = THRESHOLDS.get(env_id, np.inf)
    solved = np.flatnonzero(trailing_mean(returns) >= threshold)
    solved = solved[solved >= WINDOW - 1]
    return int(solved[0]) if len(solved) else None


def analyse(run: dict) -> dict:
    """Per-run figures from the recorder's episodes.csv and the driver's summary.json."""
    with open(os.path.join(run["run_dir"], "episodes.csv")) as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(run["run_dir"], "summary.json")) as f:
        summary = json.load(f)
    steps = np.array([int(r["step"]) for r in rows], dtype=np.int64)
    seconds = np.array([float(r["seconds"]) for r in rows])  # since the process was launched
    returns = np.array([float(r["return"]) for r in rows])
    trailing, first = trailing_mean(returns), solve_index(returns, run["env_id"])
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


def normalised(run: dict) -> float | None:
    """The run's final greedy evaluation on a scale where a random policy scores 0 and the
    env's threshold 1; None for an env without both."""
    env_id = run["env_id"]
    if run["eval_mean"] is None or env_id not in THRESHOLDS or env_id not in RANDOM_SCORES:
        return None
    return (run["eval_mean"] - RANDOM_SCORES[env_id]) / (THRESHOLDS[env_id] - RANDOM_SCORES[env_id])


def load_rliable():
    """rliable's `library` and `metrics` modules, or the reason they cannot be used."""
    try:
        from rliable import library, metrics
    except Exception as e:  # not installed; or arch 7 under pandas 3 (TypeError at import)
        return None, f"{type(e).__name__}: {e}"
    return (library, metrics), None


def iqm_and_mean(scores: np.ndarray, rliable) -> dict:
    """The interquartile mean and the mean of `scores` (runs x envs), each with a 95%
    stratified bootstrap confidence interval: runs are resampled within each env (Agarwal
    et al. 2021). With one env, that is the plain percentile bootstrap over seeds."""
    library, metrics = rliable
    outside = np.random.get_state()  # rliable resamples with numpy's global generator (its
    np.random.seed(0)  # random_state is not used for that): seeded here, the same table every time
    try:
        with warnings.catch_warnings():  # arch deprecates the random_state rliable passes on
            warnings.simplefilter("ignore", FutureWarning)
            point, interval = library.get_interval_estimates(
                {"scores": scores}, lambda s: np.array([metrics.aggregate_iqm(s), metrics.aggregate_mean(s)]),
                reps=BOOTSTRAP_REPS, random_state=np.random.RandomState(0))
    finally:
        np.random.set_state(outside)
    (iqm, mean), (low, high) = point["scores"], interval["scores"]
    return {"iqm": (iqm, low[0], high[0]), "mean": (mean, low[1], high[1])}


def fmt(values, digits=0):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}" if len(values) > 1 \
        else f"{values[0]:.{digits}f}"


def fmt_ci(estimate, digits=1) -> str:
    value, low, high = estimate
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def failures(runs: list) -> str:
    """'seed 2: exit 2: error: ...' for each failed run, as one table cell."""
    text = "; ".join(f"seed {r['seed']}: {r['error']}" for r in runs if r["error"])
    return text.replace("|", "\\|") or "-"


def table(results: list, envs: list, variants: dict, rliable) -> str:
    """Per env and variant: one row, its failed runs in the last column."""
    lines = ["| implementation | env | seeds | env steps | greedy eval return | greedy eval IQM [95% CI] | "
             "trailing-20 at end | solved | steps to solve | seconds to solve (median) | steps/s | "
             "peak RSS (MB) | failed runs |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for env_id in envs:
        for variant, label in variants.items():
            runs = [r for r in results if r["env_id"] == env_id and r["variant"] == variant]
            if not runs:
                continue
            rs = [r for r in runs if not r["error"]]
            evals = [r["eval_mean"] for r in rs if r["eval_mean"] is not None]
            iqm = fmt_ci(iqm_and_mean(np.array(evals)[:, None], rliable)["iqm"]) if evals and rliable else "-"
            solve_s = [r["solve_s"] for r in rs if r["solve_s"] is not None]
            lines.append(
                f"| {label} | {env_id} (threshold {THRESHOLDS.get(env_id, '-')}) | "
                f"{len(rs) if len(rs) == len(runs) else f'{len(rs)} of {len(runs)}'} | "
                f"{fmt([r['total_steps'] for r in rs])} | {fmt(evals, 1)} | {iqm} | "
                f"{fmt([r['final_trailing'] for r in rs], 1)} | "
                f"{len(solve_s)}/{len(rs)} | {fmt([r['solve_step'] for r in rs])} | "
                f"{f'{np.median(solve_s):.1f}' if solve_s else '-'} | "
                f"{fmt([r['steps_per_s'] for r in rs])} | {fmt([r['peak_rss_mb'] for r in rs])} | "
                f"{failures(runs)} |")
    return "\n".join(lines)


def aggregate_table(results: list, envs: list, variants: dict, rliable) -> str:
    """Per variant, across the envs with a random score and a threshold: normalised scores of
    the seeds that finished on every one of them (the bootstrap needs as many runs per env)."""
    lines = ["| implementation | envs | seeds | normalised score IQM [95% CI] | normalised score mean [95% CI] |",
             "|---|---|---|---|---|"]
    for variant, label in variants.items():
        scores = {(r["env_id"], r["seed"]): normalised(r) for r in results
                  if r["variant"] == variant and not r["error"] and normalised(r) is not None}
        scored_envs = [e for e in envs if any(env_id == e for env_id, _ in scores)]
        seeds = sorted({seed for _, seed in scores if all((e, seed) in scores for e in scored_envs)})
        if not scored_envs or not seeds:
            continue
        matrix = np.array([[scores[e, seed] for e in scored_envs] for seed in seeds])
        stats = iqm_and_mean(matrix, rliable) if rliable else None
        iqm, mean = (fmt_ci(stats["iqm"], 2), fmt_ci(stats["mean"], 2)) if stats else ("-", "-")
        lines.append(f"| {label} | {', '.join(scored_envs)} | {len(seeds)} | {iqm} | {mean} |")
    return "\n".join(lines)


def plot(results: list, envs: list, variants: dict, path: str) -> bool:
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
            for n, (variant, name) in enumerate(variants.items()):
                rs = [r for r in results if r["env_id"] == env_id and r["variant"] == variant
                      and not r["error"] and r["returns"]]
                if not rs:
                    continue
                grid = np.linspace(0, max(r[key][-1] for r in rs), 200)
                # each run's trailing-20 return, held constant between episode ends
                curves = np.array([np.interp(grid, r[key], trailing_mean(np.array(r["returns"])),
                                             left=np.nan) for r in rs])
                keep = ~np.isnan(curves).all(0)
                grid, curves = grid[keep], curves[:, keep]
                color = f"C{n}"
                ax.plot(grid, np.nanmean(curves, axis=0), color=color, label=name)
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


def how_they_ran(records: list) -> str:
    """'runs 2 at a time', or per implementation where they differ (runs reused with --reuse)."""
    ways = {}
    for r in records:
        ways.setdefault(r.get("at_once", "(how many at once: not recorded)"), []).append(r["label"])
    if len(ways) == 1:
        return "runs " + next(iter(ways))
    return "; ".join(f"{', '.join(dict.fromkeys(labels))} runs {way}" for way, labels in ways.items())


def summary(results: list, envs: list, variants: dict) -> str:
    """The README's few lines: per env, each implementation's greedy return (mean over seeds)
    and how many seeds solved it, in how many env steps and seconds from launch (medians)."""
    labels = list(variants.values())
    lines = ["| env | " + " | ".join(f"{label}: greedy return, solved, steps / seconds to solve"
                                      for label in labels) + " |",
             "|---|" + "---|" * len(labels)]
    for env_id in envs:
        cells = []
        for variant in variants:
            rs = [r for r in results if r["env_id"] == env_id and r["variant"] == variant and not r["error"]]
            evals = [r["eval_mean"] for r in rs if r["eval_mean"] is not None]
            solved = [r for r in rs if r["solve_s"] is not None]
            when = (f"{np.median([r['solve_step'] for r in solved]):,.0f} / "
                    f"{np.median([r['solve_s'] for r in solved]):.1f} s" if solved else "-")
            cells.append(f"{np.mean(evals):.1f}, {len(solved)}/{len(rs)}, {when}" if evals else "-")
        lines.append(f"| {env_id} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def update_section(path: str, section: str, name: str = "results") -> None:
    """Replace what stands between the `name` markers of the file at `path`."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    head, rest = text.split(start)
    _, tail = rest.split(end)
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + start + section + end + tail)


def notes(envs: list, sb3: str | None, sb3_note: str, total_timesteps: int | None,
          rliable_error: str | None) -> str:
    """What the table's figures are, the peer's settings, and the quoted CleanRL figures."""
    lines = [f"Returns are undiscounted episode returns, recorded for every implementation by the "
             f"same gymnasium wrapper (benchmarks/episode_log.py), not by the implementation's own "
             f"logging. 'solved' is the first time the mean of the last {WINDOW} training episodes "
             f"(epsilon-greedy) reaches the threshold; seconds count from process launch. Greedy "
             f"eval: 10 episodes after training, each run's mean; beside its mean ± std over seeds, "
             f"its interquartile mean (IQM, the mean of the middle 50% of runs) with a 95% "
             f"confidence interval, from {BOOTSTRAP_REPS} bootstrap resamples of the runs (rliable; "
             f"Agarwal et al. 2021, 'Deep RL at the Edge of the Statistical Precipice'). steps/s: "
             f"env steps over the time from the first env step to the last (learning included, "
             f"start-up and evaluation not).", ""]
    random_scores = [f"{env_id} {RANDOM_SCORES[env_id]:g}" for env_id in envs if env_id in RANDOM_SCORES]
    if random_scores:
        lines += [f"Across envs: each run's greedy eval normalised as (return - random) / "
                  f"(threshold - random), a uniformly random policy's mean return over 100 episodes "
                  f"being {'; '.join(random_scores)}; stratified bootstrap (runs resampled within each "
                  f"env).", ""]
    if rliable_error:
        lines += [f"IQM and confidence intervals left out: rliable could not be imported ({rliable_error}); "
                  f"pip install -r benchmarks/requirements.txt.", ""]
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


def at_least_1(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def env_error(env_id: str) -> str | None:
    """Why env_id cannot be made here (an unknown id, module or package), or None."""
    import gymnasium as gym
    try:
        atari_id(env_id)  # (imports ale_py, which registers the ALE ids)
        gym.make(env_id).close()
    except (gym.error.Error, ImportError) as e:
        return f"--envs {env_id}: {str(e).splitlines()[0]}"
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", default=None, help=f"default: {' '.join(THRESHOLDS)}")
    parser.add_argument("--seeds", type=at_least_1, default=None,
                        help="seeds 1..N per env (default 5)")
    parser.add_argument("--grid", nargs="+", default=[], metavar="FLAG=V1,V2",
                        help="dqn.py / dqn_atari.py flags to sweep, every combination its own rows, "
                             "e.g. --grid learning-rate=1e-3,3e-4 n-step=1,3")
    parser.add_argument("--jobs", type=at_least_1, default=os.cpu_count(),
                        help="runs at once (without --ray)")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="run each run as a Ray task: on a Ray started here, or on the cluster at "
                             "ADDRESS ('auto' on one of its nodes; pip install -r benchmarks/requirements.txt)")
    parser.add_argument("--cpus-per-run", type=float, default=1, help="with --ray: CPUs each run holds")
    parser.add_argument("--gpus-per-run", type=float, default=0,
                        help="with --ray: GPUs each Atari (dqn_atari.py) run holds, fractions allowed")
    parser.add_argument("--quick", action="store_true",
                        help="CartPole-v1, 2 seeds (unless --envs or --seeds say otherwise)")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--total-timesteps", type=at_least_1, default=None,
                        help="env steps for every run, of both implementations "
                             "(default: dqn.py's presets, and rl-zoo's n_timesteps for SB3)")
    parser.add_argument("--no-sb3", action="store_true", help="leave Stable-Baselines3 out")
    parser.add_argument("--sb3-python", default=None,
                        help="a Python interpreter whose environment has stable-baselines3 "
                             "(default: this one; with --ray, the path on every node)")
    parser.add_argument("--update-readme", action="store_true",
                        help="write the README's results summary and docs/results.md's full table")
    parser.add_argument("--reuse", action="store_true",
                        help="read back the runs already finished in --out instead of running them again")
    parser.add_argument("--random-scores", action="store_true",
                        help="measure a random policy's score on each env (RANDOM_SCORES) and exit")
    parser.add_argument("--dqn-args", nargs=argparse.REMAINDER, default=[],
                        help="extra flags for dqn.py, e.g. --dqn-args --total-timesteps 20000")
    opts = parser.parse_args()
    envs = opts.envs or (["CartPole-v1"] if opts.quick else list(THRESHOLDS))
    seeds = opts.seeds or (2 if opts.quick else 5)
    errors = [e for e in map(env_error, envs) if e]
    if errors:
        parser.error(errors[0])
    if opts.random_scores:
        for env_id in envs:
            print(f"{env_id}: {random_policy_score(env_id):.1f}")
        return
    if opts.ray is not None:
        try:
            import ray  # noqa: F401
        except ImportError:
            sys.exit("error: --ray needs Ray: pip install -r benchmarks/requirements.txt")
    try:
        grid = parse_grid(opts.grid)
    except ValueError as e:
        parser.error(str(e))

    sb3, sb3_note = None, "Stable-Baselines3 left out (--no-sb3)."
    if not opts.no_sb3:
        sb3 = sb3_version(opts.sb3_python or sys.executable)
        if sb3 is None and opts.sb3_python:
            parser.error(f"--sb3-python {opts.sb3_python}: stable-baselines3 is not importable there")
        if sb3 is None:
            sb3_note = ("Stable-Baselines3 is not installed, so dqn.py ran alone "
                        "(pip install -r benchmarks/requirements.txt, or --sb3-python PATH).")
    print(f"Stable-Baselines3 {sb3}: trained beside dqn.py" if sb3 else sb3_note)

    steps = [] if opts.total_timesteps is None else ["--total-timesteps", str(opts.total_timesteps)]
    dqn_extra = [*steps, *opts.dqn_args]  # (model.pt kept: benchmarks/agents.py animates it)
    extra = {"dqn": dqn_extra, "dqn_atari": dqn_extra, "sb3": steps}
    runs = plan_runs(envs, seeds, grid, sb3 is not None, opts.sb3_python)
    variants = {run["variant"]: run["label"] for run in runs}  # in the order of the plan
    reused = ({n: finished_run(opts.out, run, extra[run["impl"]]) for n, run in enumerate(runs)}
              if opts.reuse else {})
    todo = [run for n, run in enumerate(runs) if not reused.get(n)]
    print(f"{len(runs)} runs ({len(runs) - len(todo)} finished before), outputs in {opts.out}")
    for run in todo:  # how it ran, in its run.json: timings depend on it
        run["at_once"] = (f"{opts.jobs} at a time" if opts.ray is None
                          else f"as Ray tasks of {opts.cpus_per_run:g} CPU each")
    if opts.ray is None:
        records = sweep_here(todo, opts.out, extra, opts.jobs)
    else:
        records = sweep_ray(todo, opts.out, extra, opts.ray, opts.cpus_per_run, opts.gpus_per_run)
    trained = {(r["variant"], r["env_id"], r["seed"]): r for r in records}
    records = [reused.get(n) or trained[run["variant"], run["env_id"], run["seed"]] for n, run in enumerate(runs)]

    results = [r if r["error"] else analyse(r) for r in records]
    where = how_they_ran(results)
    rnd = lambda x: x if x is None else round(x, 1)  # noqa: E731
    for r in results:
        name = f"{r['label']:>16} {r['env_id']:>16} seed {r['seed']}"
        print(f"{name}: FAILED, {r['error']}" if r["error"] else
              f"{name}: eval {rnd(r['eval_mean'])}  solved at {r['solve_step']} steps / {rnd(r['solve_s'])} s  "
              f"trailing-20 at end {rnd(r['final_trailing'])} (lowest after solving "
              f"{rnd(r['min_trailing_after_solve'])})")

    rliable, rliable_error = load_rliable()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
              f"{platform.system()}, Python {platform.python_version()}"
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    md = (f"Produced by `{command.strip()}` on {time.strftime('%Y-%m-%d')} ({machine}), {where}.\n\n"
          + table(results, envs, variants, rliable) + "\n\n"
          + "Across envs, greedy eval normalised from a random policy (0) to the threshold (1):\n\n"
          + aggregate_table(results, envs, variants, rliable) + "\n\n"
          + notes(envs, sb3, sb3_note, opts.total_timesteps, rliable_error))
    os.makedirs(opts.out, exist_ok=True)
    with open(os.path.join(opts.out, "results.md"), "w", encoding="utf-8") as f:
        f.write(md)
    with open(os.path.join(opts.out, "results.json"), "w") as f:
        json.dump(results, f)
    plotted = plot(results, envs, variants, os.path.join(opts.out, "curves.png"))
    if opts.update_readme:
        curves = "\n![learning curves](../benchmarks/results/curves.png)\n" if plotted else ""
        update_section(os.path.join(REPO, "docs", "results.md"), md + curves)
        update_section(os.path.join(REPO, "README.md"),
                       f"{summary(results, envs, variants)}\n\nGreedy return: 10 greedy episodes "
                       f"after training, mean over {seeds} seeds; solved: seeds whose last 20 "
                       "training episodes reached the env's threshold; steps and seconds from "
                       f"launch to solve: medians over those. On {machine}, {where}. The full "
                       "table, the curves and how they are made: "
                       "[docs/results.md](docs/results.md).\n")
    print("\n" + md)
    print(f"wrote {opts.out}/results.md" + (" and curves.png" if plotted else ""))
    failed_runs = [r for r in results if r["error"]]
    if failed_runs:
        sys.exit(f"{len(failed_runs)} of {len(results)} runs failed: see 'failed runs' in the table")


if __name__ == "__main__":
    main()
