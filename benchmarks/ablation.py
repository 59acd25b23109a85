"""What each of dqn.py's refinements buys: every preset against itself with one refinement out.

    python benchmarks/ablation.py                          # CartPole, Acrobot, LunarLander x 10 seeds
    python benchmarks/ablation.py --envs CartPole-v1 --seeds 20 --reuse   # 10 more seeds each
    python benchmarks/ablation.py --table-only             # the page again, from the kept runs

Per env, as Revisiting Rainbow (Obando-Ceron & Castro, ICML 2021) did on classic control:
- the preset (dqn.PRESETS[env]);
- the preset with one refinement set back to Args' default (its plain-DQN value), one at a time;
- the plain 2015 DQN: Args' own defaults, at the preset's total_timesteps.

Each run is benchmarks/run.py's (its own process, every training episode recorded by
episode_log.py), seeds interleaved so that a sweep cut short is balanced. Runs write no model
and no checkpoint, so that their records (--out) stay small enough to keep; --reuse reads back
those that finished. Writes docs/ablation.md, per env and variant: the greedy return's IQM with
its 95% confidence interval, how many seeds solved the env, and the steps and seconds to solve;
and the figure benchmarks/results/ablation.png.
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)
import run as runner  # noqa: E402  (benchmarks/run.py: the runs, their records, IQM)

import dqn  # noqa: E402

# The refinements beside the 2015 algorithm, as Args names them, and as the table names them.
REFINEMENTS = {
    "n_step": "n-step returns", "double_q": "Double DQN", "dueling": "dueling head",
    "tau": "Polyak target updates", "num_envs": "several envs",
    "gradient_steps": "gradient steps per round", "hidden_sizes": "wider hidden layers",
    "layer_norm": "LayerNorm", "small_last_layer": "near-zero last layer", "loss": "MSE loss",
    "max_grad_norm": "gradient clipping", "lr_end_fraction": "learning-rate decay",
    "adam_eps": "Adam's epsilon"}
ENVS = ["CartPole-v1", "Acrobot-v1", "LunarLander-v3"]
DQN_ARGS = ["--no-save-model", "--checkpoint-every", "0"]  # every run: nothing but its records
PAGE = os.path.join(REPO, "docs", "ablation.md")
FIGURE = os.path.join(HERE, "results", "ablation.png")


def flag(name: str, value) -> list:
    """dqn.py's command-line flag that sets Args.name to value."""
    dashed = name.replace("_", "-")
    if isinstance(value, bool):
        return [f"--{dashed}" if value else f"--no-{dashed}"]
    if isinstance(value, tuple):
        return [f"--{dashed}", *map(str, value)]
    return [f"--{dashed}", str(value)]


def variants(env_id: str) -> dict:
    """{name: dqn.py flags}: the preset, the preset without each refinement, the plain DQN."""
    preset, plain = dqn.PRESETS[env_id], dqn.Args()
    out = {"preset": []}
    for name, what in REFINEMENTS.items():
        if name in preset and preset[name] != getattr(plain, name):
            out[f"without {what} ({' '.join(flag(name, getattr(plain, name)))})"] = \
                flag(name, getattr(plain, name))
    out["plain DQN (Args' defaults)"] = [arg for name in preset if name != "total_timesteps"
                                         for arg in flag(name, getattr(plain, name))]
    return out


def plan(envs: list, seeds: int) -> list:
    """One run.py run per env, seed and variant; seed 1 of every variant first, then seed 2..."""
    runs = []
    for env_id in envs:
        for seed in range(1, seeds + 1):
            for label, flags in variants(env_id).items():
                directory = label.split(" (")[0].replace(" ", "-").replace("'", "")
                runs.append({"impl": "dqn", "env_id": env_id, "seed": seed, "flags": flags,
                             "variant": directory, "label": label, "python": None})
    return runs


def row(runs: list, rliable, preset_ci) -> tuple:
    """A variant's figures over its seeds, and its greedy return's IQM (value, low, high)."""
    evals = [r["eval_mean"] for r in runs]
    iqm = runner.iqm_and_mean(np.array(evals)[:, None], rliable)["iqm"]
    solved = [r for r in runs if r["solve_step"] is not None]
    steps = [r["solve_step"] for r in solved]
    when = (f"{np.median(steps):,.0f} [{np.percentile(steps, 25):,.0f}, "
            f"{np.percentile(steps, 75):,.0f}] | {np.median([r['solve_s'] for r in solved]):.1f}"
            if solved else "- | -")
    if preset_ci is None:
        against = "(the reference)"
    elif iqm[2] < preset_ci[1]:
        against = "**lower**"
    elif iqm[1] > preset_ci[2]:
        against = "**higher**"
    else:
        against = "overlaps"
    cells = [str(len(runs)), runner.fmt_ci(iqm), against, f"{len(solved)}/{len(runs)}", when]
    return cells, iqm


def page(results: list, envs: list, rliable, command: str) -> tuple:
    """The markdown tables, per env, and {env: [(label, iqm)]} for the figure."""
    lines, figure = [], {}
    for env_id in envs:
        mine = [r for r in results if r["env_id"] == env_id]
        if not mine:
            continue
        threshold = runner.THRESHOLDS[env_id]
        lines += [f"### {env_id} (solved: the last 20 training episodes average {threshold})", "",
                  "| variant | seeds | greedy return IQM [95% CI] | against the preset | solved | "
                  "steps to solve, median [quartiles] | seconds to solve, median |",
                  "|---|---|---|---|---|---|---|"]
        figure[env_id], preset_ci = [], None
        for label in variants(env_id):
            runs = [r for r in mine if r["label"] == label]
            if not runs:
                continue
            cells, iqm = row(runs, rliable, preset_ci)
            preset_ci = preset_ci or iqm
            figure[env_id].append((label, iqm))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines), figure


def plot(figure: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(figure), figsize=(5.5 * len(figure), 4.5), squeeze=False)
    for ax, (env_id, bars) in zip(axes[0], figure.items()):
        for y, (label, (iqm, low, high)) in enumerate(bars):
            color = "C0" if label == "preset" else "gray" if label.startswith("plain") else "C1"
            ax.errorbar(iqm, y, xerr=[[iqm - low], [high - iqm]], fmt="o", color=color, capsize=3)
        ax.set_yticks(range(len(bars)), [label.split(" (")[0] for label, _ in bars], fontsize=8)
        ax.invert_yaxis()
        ax.axvline(runner.THRESHOLDS[env_id], color="gray", linestyle=":", linewidth=1)
        ax.set_title(env_id)
        ax.set_xlabel("greedy return, IQM and 95% CI over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", default=ENVS, choices=list(dqn.PRESETS))
    parser.add_argument("--seeds", type=runner.at_least_1, default=10, help="seeds 1..N")
    parser.add_argument("--jobs", type=runner.at_least_1, default=os.cpu_count(),
                        help="runs at once")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "ablation"),
                        help="where each run's record is kept")
    parser.add_argument("--reuse", action="store_true", help="read back the runs finished in --out")
    parser.add_argument("--table-only", action="store_true",
                        help="train nothing: the page from the runs finished in --out")
    opts = parser.parse_args()
    rliable, error = runner.load_rliable()
    if rliable is None:
        sys.exit(f"error: the IQM needs rliable ({error}): pip install -r benchmarks/requirements.txt")
    runs = plan(opts.envs, opts.seeds)
    kept = {n: runner.finished_run(opts.out, run, DQN_ARGS) for n, run in enumerate(runs)} \
        if opts.reuse or opts.table_only else {}
    todo = [] if opts.table_only else [run for n, run in enumerate(runs) if not kept.get(n)]
    print(f"{len(runs)} runs ({len(runs) - len(todo)} finished before), records in {opts.out}")
    for run in todo:
        run["at_once"] = f"{opts.jobs} at a time"
    records = [r for r in kept.values() if r] + runner.sweep_here(todo, opts.out,
                                                                  {"dqn": DQN_ARGS}, opts.jobs)
    failed = [r for r in records if r["error"]]
    results = [runner.analyse(r) for r in records if not r["error"]]
    if not results:
        sys.exit(f"error: no finished run in {opts.out}")
    command = "python benchmarks/ablation.py " + " ".join(sys.argv[1:])
    tables, figure = page(results, opts.envs, rliable, command)
    machine = (f"{runner.platform.processor() or runner.platform.machine()}, {os.cpu_count()} "
               f"cores, Python {runner.platform.python_version()}")
    made = (f"Made by `{command.strip()}` on {time.strftime('%Y-%m-%d')} ({machine}; "
            f"{runner.how_they_ran(results)}).\n\n![ablation](../benchmarks/results/ablation.png)"
            f"\n\n{tables}")
    runner.update_section(PAGE, made, "ablation")
    plot(figure, FIGURE)
    print(made)
    print(f"wrote {PAGE} and {FIGURE}")
    if failed:
        sys.exit(f"{len(failed)} of {len(records)} runs failed: " + runner.failures(failed))


if __name__ == "__main__":
    main()
