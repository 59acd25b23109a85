"""A short-budget Atari learning curve for dqn_atari.py on this machine.

    python benchmarks/atari_curve.py                      # Breakout, 100k env steps (~16 min on 2 CPU cores)
    python benchmarks/atari_curve.py --total-timesteps 12500000 --learning-starts 50000   # the full run

Trains `python dqn_atari.py` with the given budget (the other settings are dqn_atari.py's
defaults: the Nature paper's since 2026-12-07, CleanRL's before, so the dates in
results/atari_*.md say which; except the replay buffer, at most the budget, and epsilon's
decay, over 40% of the budget by default, so that a short run learns past its first
minutes of play), then writes benchmarks/results/atari_<game>.md (the command, the
budget, the final evaluation, wall time) and atari_<game>.png (game returns vs env steps)
from the run's metrics.csv. A short budget shows the pipeline learning, not a final score:
for scale, CleanRL reports Breakout 366.9 +- 39.9 after 10M steps.
"""

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--total-timesteps", type=int, default=100_000)
    parser.add_argument("--learning-starts", type=int, default=10_000)
    parser.add_argument("--exploration-fraction", type=float, default=0.4)
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--eval-episodes", type=int, default=10, help="games of the final evaluation")
    parser.add_argument("--num-envs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true",
                        help="dqn_atari.py --bf16; writes atari_<game>_bf16.md and .png beside the float32 ones")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    opts = parser.parse_args()

    flags = ["--env-id", opts.env_id, "--seed", str(opts.seed), "--total-timesteps", str(opts.total_timesteps),
             "--learning-starts", str(opts.learning_starts),
             "--exploration-fraction", str(opts.exploration_fraction), "--torch-threads", str(opts.torch_threads),
             "--buffer-size", str(min(1_000_000, opts.total_timesteps)), "--eval-episodes", str(opts.eval_episodes),
             "--num-envs", str(opts.num_envs), "--device", opts.device,
             "--output-dir", os.path.join(opts.out, "runs", "atari"), "--no-save-model",
             *(["--bf16"] if opts.bf16 else [])]
    command = ["python", "dqn_atari.py", *flags]
    print(" ".join(command), flush=True)
    launched = time.time()
    proc = subprocess.run([sys.executable, os.path.join(REPO, "dqn_atari.py"), *flags],
                          capture_output=True, text=True)
    wall = time.time() - launched
    if proc.returncode != 0:
        sys.exit(f"dqn_atari.py failed:\n{proc.stderr[-2000:]}")
    run_dir = proc.stdout.strip().splitlines()[-1].removeprefix("results in ").strip()
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    steps = np.array([int(r["step"]) for r in rows])
    returns = np.array([float(r["return"]) for r in rows])
    if not len(returns):
        sys.exit(f"no game ended in {opts.total_timesteps} steps ({run_dir}): no curve; "
                 "give more --total-timesteps")
    eval_returns = summary["eval_returns"]
    game = opts.env_id.split("/")[-1].split("NoFrameskip")[0].split("-")[0].lower() + ("_bf16" if opts.bf16 else "")

    window = 20
    trailing = np.array([returns[max(0, i - window + 1):i + 1].mean() for i in range(len(returns))])
    first = returns[:window].mean()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}"
    md = (f"Produced by `python benchmarks/atari_curve.py --env-id {opts.env_id} --total-timesteps "
          f"{opts.total_timesteps} --learning-starts {opts.learning_starts} --torch-threads {opts.torch_threads} "
          f"--num-envs {opts.num_envs} --device {opts.device}{' --bf16' if opts.bf16 else ''}` on "
          f"{time.strftime('%Y-%m-%d')} "
          f"({machine}), which ran `{' '.join(command)}`.\n\n"
          f"| budget (env steps) | games | mean return, first {window} games | last {window} games | "
          f"evaluation (epsilon 0.05, {len(eval_returns)} games) | wall time |\n|---|---|---|---|---|---|\n"
          f"| {opts.total_timesteps:,} | {len(returns)} | {first:.1f} | {trailing[-1]:.1f} | "
          f"{np.mean(eval_returns):.1f} ± {np.std(eval_returns):.1f} | {wall / 60:.1f} min |\n")
    os.makedirs(opts.out, exist_ok=True)
    with open(os.path.join(opts.out, f"atari_{game}.md"), "w", encoding="utf-8") as f:
        f.write(md)
    print(md)
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -r benchmarks/requirements.txt)")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, returns, ".", alpha=0.3, label="game return")
    ax.plot(steps, trailing, label=f"mean of the last {window}")
    ax.axvline(opts.learning_starts, color="gray", linestyle=":", linewidth=1, label="learning starts")
    ax.set_xlabel("env steps")
    ax.set_ylabel("return (whole game, unclipped)")
    ax.set_title(f"dqn_atari.py{' --bf16' if opts.bf16 else ''}, {opts.env_id}, {opts.total_timesteps:,} steps")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(opts.out, f"atari_{game}.png"), dpi=80)


if __name__ == "__main__":
    main()
