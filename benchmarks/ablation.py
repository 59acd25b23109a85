"""What each of dqn.py's refinements buys: every preset against itself, refinements taken out.

    python benchmarks/ablation.py                        # the 4 classic-control envs x 10 seeds
    python benchmarks/ablation.py --envs CartPole-v1 --seeds 20 --reuse   # 10 more seeds each
    python benchmarks/ablation.py --table-only           # the page again, from the kept runs

Per env, as Revisiting Rainbow (Obando-Ceron & Castro, ICML 2021) did on classic control:
- the preset (dqn.PRESETS[env]);
- the preset with one refinement set back to Args' default (its plain-DQN value), one at a time;
- once those have the same seeds (10 or more): the preset without all the refinements whose
  removal alone moved none of the three intervals for the worse, at once (they may stand in
  for one another); if that moved one, they are taken out one after another instead;
- the plain 2015 DQN: Args' own defaults, at the preset's total_timesteps.

Each run is benchmarks/run.py's (its own process, every training episode recorded by
episode_log.py), seeds interleaved so that a sweep cut short is balanced. Runs write no model
and no checkpoint, so that their records (--out) stay small enough to keep; --reuse reads back
those that finished with the settings the variant has now (a preset that changed is run again).
Writes docs/ablation.md, per env and variant: how many seeds solved the env, and the IQM over
seeds, with its 95% confidence interval, of the greedy return and of the env steps and seconds
to solve (a seed that did not solve counts its whole run); and benchmarks/results/ablation.png.
"""

import argparse
import dataclasses
import json
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
    "tau": "Polyak target updates", "num_envs": "several envs",  # (tau 1: copies, as often)
    "gradient_steps": "gradient steps per round", "hidden_sizes": "wider hidden layers",
    "loss": "MSE loss", "max_grad_norm": "gradient clipping", "adam_eps": "Adam's epsilon"}
ENVS = ["CartPole-v1", "Acrobot-v1", "MountainCar-v0", "LunarLander-v3"]
MIN_SEEDS = 10  # below this, intervals are too wide to call a refinement neutral
DQN_ARGS = ["--no-save-model", "--checkpoint-every", "0"]  # every run: nothing but its records
DQN_FLAGS = ["save_model", "checkpoint_every"]  # the Args that DQN_ARGS sets
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


def refinements(env_id: str) -> list:
    """The refinements the env's preset sets to other values than Args' defaults."""
    preset, plain = dqn.PRESETS[env_id], dqn.Args()
    return [name for name in REFINEMENTS if preset.get(name, getattr(plain, name)) !=
            getattr(plain, name)]


def without(name: str) -> tuple:
    """(the table's label, dqn.py's flags) of a preset without refinement `name`."""
    flags = flag(name, getattr(dqn.Args(), name))
    return f"without {REFINEMENTS[name]} ({' '.join(flags)})", flags


def without_several(names: tuple, how: str) -> tuple:
    """(the table's label, dqn.py's flags) of a preset without every refinement in `names`."""
    plain = dqn.Args()
    return (f"{how}: {', '.join(REFINEMENTS[name] for name in names)}",
            [arg for name in names for arg in flag(name, getattr(plain, name))])


def variants(env_id: str, together: tuple = (), steps: list = ()) -> dict:
    """{label: dqn.py flags}: the preset, the preset without each refinement, then without all
    of `together` at once (those whose removal alone made nothing worse), then the steps
    of taking them out one after another (`steps`: the refinements out at each), the plain DQN."""
    preset, plain = dqn.PRESETS[env_id], dqn.Args()
    out = {"preset": []}
    out.update(without(name) for name in refinements(env_id))
    if len(together) > 1:
        out.update([without_several(together, "without all of")])
    out.update(without_several(names, "one after another, without") for names in steps)
    out["plain DQN (Args' defaults)"] = [arg for name in preset if name != "total_timesteps"
                                         for arg in flag(name, getattr(plain, name))]
    return out


def plan(envs: list, seeds: int, together: dict, steps: dict | None = None) -> list:
    """One run.py run per env, seed and variant; seed 1 of every variant first, then seed 2..."""
    runs = []
    for env_id in envs:
        for seed in range(1, seeds + 1):
            for label, flags in variants(env_id, together.get(env_id, ()),
                                         (steps or {}).get(env_id, ())).items():
                directory = label.split(" (")[0].replace(" ", "-").replace("'", "")
                directory = directory.replace("without-all-of:-", "without-").replace(",", "")
                directory = directory.replace("one-after-another-without:-", "without-in-turn-")
                runs.append({"impl": "dqn", "env_id": env_id, "seed": seed, "flags": flags,
                             "variant": directory, "label": label, "python": None})
    return runs


def kept(out: str, run: dict) -> dict | None:
    """The record of this run finished in `out` with the settings the run would have now: a run
    of a preset since changed is not kept, nor one that failed."""
    record = runner.finished_run(out, run, DQN_ARGS)
    if record is None:
        return None
    with open(os.path.join(record["run_dir"], "summary.json")) as f:
        ran = json.load(f)["settings"]
    now = dqn.parse_args(["--env-id", run["env_id"], "--seed", str(run["seed"]), *run["flags"]])
    now = json.loads(json.dumps(dataclasses.asdict(now)))  # (tuples as JSON has them: lists)
    same = all(ran.get(k) == v for k, v in now.items() if k not in ("output_dir", *DQN_FLAGS))
    return {**record, "label": run["label"], "variant": run["variant"]} if same else None


def against(ci, preset_ci, lower: str, higher: str) -> str:
    """How an interval stands to the preset's: apart below, apart above, or overlapping."""
    if preset_ci is None:
        return "-"
    return lower if ci[2] < preset_ci[1] else higher if ci[1] > preset_ci[2] else "overlaps"


def worse(found: tuple, than: tuple) -> bool:
    """Whether one of a variant's intervals lies apart from `than`'s on the worse side: a lower
    greedy return, more steps or more seconds to solve."""
    sides = [("worse", "better"), ("better", "worse"), ("better", "worse")]
    return any(against(ci, p, *side) == "worse" for ci, p, side in zip(found, than, sides))


def iqms(runs: list, rliable) -> tuple:
    """The IQMs (value, low, high) over seeds of the greedy return, and of the env steps and
    seconds from launch to solve (a run that did not solve counts its whole run)."""
    runs = sorted(runs, key=lambda r: r["seed"])  # (the bootstrap resamples them in this order)
    figures = [[r["eval_mean"] for r in runs],
               [r["solve_step"] or r["total_steps"] for r in runs],
               [r["solve_s"] or r["seconds"][-1] for r in runs]]
    return tuple(runner.iqm_and_mean(np.array(x)[:, None], rliable)["iqm"] for x in figures)


def row(runs: list, rliable, preset: tuple) -> tuple:
    """A variant's table cells over its seeds, and its IQMs."""
    ret, steps, seconds = found = iqms(runs, rliable)
    preset = preset or (None, None, None)
    solved = sum(r["solve_step"] is not None for r in runs)
    cells = [str(len(runs)), runner.fmt_ci(ret), against(ret, preset[0], "**lower**", "higher"),
             f"{solved}/{len(runs)}", runner.fmt_ci(steps, 0),
             against(steps, preset[1], "fewer", "**more**"), runner.fmt_ci(seconds),
             against(seconds, preset[2], "less", "**more**")]
    return cells, found


def neutral(results: list, env_id: str, rliable) -> tuple:
    """The refinements of the env's preset whose removal alone made nothing measurably worse
    (no interval apart from the preset's on the worse side), once every variant has the same
    seeds, at least MIN_SEEDS of them; () before."""
    mine = {label: [r for r in results if r["env_id"] == env_id and r["label"] == label]
            for label in variants(env_id)}
    seeds = {tuple(sorted(r["seed"] for r in runs)) for runs in mine.values()}
    if len(seeds) != 1 or len(seeds.pop()) < MIN_SEEDS:
        return ()
    preset = iqms(mine["preset"], rliable)
    return tuple(name for name in refinements(env_id)
                 if not worse(iqms(mine[without(name)[0]], rliable), preset))


def one_after_another(results: list, env_id: str, together: tuple, rliable) -> tuple:
    """Takes the refinements in `together` out one after another, the one whose removal alone
    cost the fewest steps to solve first, keeping each out while no interval moves for the
    worse, off the preset's or off the last step kept's (small losses, each within the preset's
    intervals, would add up). Returns (the steps measured, the refinements out so far, the next
    step to measure or None when done). Nothing to do when all of them out together made
    nothing worse."""
    def runs(label):
        return [r for r in results if r["env_id"] == env_id and r["label"] == label]

    preset = iqms(runs("preset"), rliable)
    seeds = sorted(r["seed"] for r in runs("preset"))
    all_of = without_several(together, "without all of")[0]
    if sorted(r["seed"] for r in runs(all_of)) != seeds:  # (its runs still to come)
        return [], [], None
    if not worse(iqms(runs(all_of), rliable), preset):
        return [], list(together), None
    _, metrics = rliable
    cost = {name: metrics.aggregate_iqm(np.array(
        [[r["solve_step"] or r["total_steps"]] for r in runs(without(name)[0])]))
        for name in together}
    order = sorted(together, key=cost.get)
    out, steps, last = [order[0]], [], iqms(runs(without(order[0])[0]), rliable)
    for name in order[1:]:
        names = (*out, name)
        if len(names) == len(together):  # all of them out: measured above, it moved one
            break
        label = without_several(names, "one after another, without")[0]
        if sorted(r["seed"] for r in runs(label)) != seeds:
            return steps, out, names
        steps.append(names)
        found = iqms(runs(label), rliable)
        if not worse(found, preset) and not worse(found, last):
            out, last = out + [name], found
    return steps, out, None


def page(results: list, envs: list, together: dict, turns: dict, rliable) -> tuple:
    """The markdown tables, per env, with the outcome of taking refinements out one after
    another (`turns`: one_after_another's), and {env: [(label, iqm)]} for the figure."""
    lines, figure = [], {}
    for env_id in envs:
        mine = [r for r in results if r["env_id"] == env_id]
        if not mine:
            continue
        threshold = runner.THRESHOLDS[env_id]
        lines += [f"### {env_id} (solved: the last 20 training episodes average {threshold})", "",
                  "| variant | seeds | greedy return IQM [95% CI] | against the preset | solved | "
                  "steps to solve IQM [95% CI] | against the preset | seconds to solve IQM "
                  "[95% CI] | against the preset |",
                  "|---|---|---|---|---|---|---|---|---|"]
        figure[env_id], preset = [], None
        steps, out, next_step = turns.get(env_id, ((), (), None))
        for label in variants(env_id, together.get(env_id, ()), steps):
            runs = [r for r in mine if r["label"] == label]
            if not runs:
                continue
            cells, found = row(runs, rliable, preset)
            preset = found if label == "preset" else preset
            figure[env_id].append((label, found))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if out:
            kept_in = [REFINEMENTS[name] for name in together[env_id] if name not in out]
            how = ("All of them at once" if set(out) == set(together[env_id]) else
                   "One after another, the one whose removal alone cost the fewest steps first")
            lines += ["", f"{how}: out with no interval moving for the worse, "
                      f"{', '.join(REFINEMENTS[name] for name in out)}; kept, "
                      f"{', '.join(kept_in) or 'none'}"
                      + (f" (still to run: {without_several(next_step, 'without')[0]})."
                         if next_step else ".")]
        lines.append("")
    return "\n".join(lines), figure


def plot(figure: dict, path: str) -> None:
    """Per env, a column: each variant's greedy return and steps to solve, IQM and 95% CI."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(figure), figsize=(4.5 * len(figure), 7.5), squeeze=False)
    for col, (env_id, bars) in enumerate(figure.items()):
        count = [label.split(": ", 1)[-1].count(",") + 1 for label, _ in bars]
        names = [f"without all {n} of those" if "all of" in label
                 else f"in turn: {n} out" if label.startswith("one after")
                 else label.split(" (")[0] for (label, _), n in zip(bars, count)]
        for row, (what, line) in enumerate([("greedy return", runner.THRESHOLDS[env_id]),
                                            ("env steps to solve", None)]):
            ax = axes[row][col]
            for y, (label, found) in enumerate(bars):
                value, low, high = found[row]
                color = "C0" if label == "preset" else "gray" if label.startswith("plain") else "C1"
                ax.errorbar(value, y, xerr=[[value - low], [high - value]], fmt="o", color=color,
                            capsize=3)
            ax.set_yticks(range(len(bars)), names, fontsize=8)
            ax.invert_yaxis()
            if line is not None:
                ax.axvline(line, color="gray", linestyle=":", linewidth=1)
            ax.set_title(f"{env_id}: {what}", fontsize=10)
        axes[1][col].set_xlabel("IQM and 95% CI over seeds (no solve: the whole run)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def measure(runs: list, what: str, opts) -> list:
    """The records of these runs: those finished before in opts.out read back (--reuse,
    --table-only), the others trained (not with --table-only), opts.jobs at a time."""
    reused = [kept(opts.out, run) if opts.reuse or opts.table_only else None for run in runs]
    todo = [] if opts.table_only else [run for run, r in zip(runs, reused) if not r]
    print(f"{what}: {len(runs)} runs ({sum(map(bool, reused))} finished before), records in "
          f"{opts.out}")
    for run in todo:
        run["at_once"] = f"{opts.jobs} at a time"
    return [r for r in reused if r] + runner.sweep_here(todo, opts.out, {"dqn": DQN_ARGS},
                                                        opts.jobs)


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
        sys.exit(f"error: the IQM needs rliable ({error}): "
                 "pip install -r benchmarks/requirements.txt")
    # One refinement out at a time; then, per env, all those out together whose removal alone
    # made nothing worse: they may stand in for one another.
    together, records = {}, []
    for phase in (1, 2):
        runs = plan(opts.envs, opts.seeds, together)
        runs = [run for run in runs if phase == 1 or run["label"].startswith("without all of")]
        what = "the preset, each refinement out, plain DQN" if phase == 1 else "all of them out"
        records += measure(runs, what, opts)
        results = [runner.analyse(r) for r in records if not r["error"]]
        if phase == 1:
            together = {env_id: neutral(results, env_id, rliable) for env_id in opts.envs}
            for env_id in (e for e in opts.envs if len(together[e]) < 2):
                print(f"{env_id}: no 'without all of' row: it needs two refinements that alone "
                      f"made nothing worse, every variant at the same seeds, {MIN_SEEDS} or more")
    # If all of those out together made something worse: which of them can go, one after another.
    turns = {}
    for env_id in (e for e in opts.envs if len(together[e]) > 1):
        tried = []
        while True:
            turns[env_id] = one_after_another(results, env_id, together[env_id], rliable)
            next_step = turns[env_id][2]
            # Done; or a step measured already, whose runs are still not the preset's seeds
            if next_step is None or next_step in tried:
                break
            tried.append(next_step)
            runs = [run for run in plan([env_id], opts.seeds, together, {env_id: [next_step]})
                    if run["label"].startswith("one after another")]
            measured = measure(runs, runs[0]["label"], opts)
            records += measured
            results = [runner.analyse(r) for r in records if not r["error"]]
            if any(r["error"] for r in measured):
                break  # (a run failed: said below)
    failed = [r for r in records if r["error"]]
    if not results:
        sys.exit(f"error: no finished run in {opts.out}")
    command = "python benchmarks/ablation.py " + " ".join(sys.argv[1:])
    tables, figure = page(results, opts.envs, together, turns, rliable)
    machine = (f"{runner.platform.processor() or runner.platform.machine()}, {os.cpu_count()} "
               f"cores, Python {runner.platform.python_version()}")
    made = (f"Made by `{command.strip()}` on {time.strftime('%Y-%m-%d')} ({machine}; "
            f"runs {' or '.join(sorted({r.get('at_once', '?') for r in results}))})."
            f"\n\n![ablation](../benchmarks/results/ablation.png)"
            f"\n\n{tables}")
    runner.update_section(PAGE, made, "ablation")
    plot(figure, FIGURE)
    print(made)
    print(f"wrote {PAGE} and {FIGURE}")
    if failed:
        sys.exit(f"{len(failed)} of {len(records)} runs failed: " + runner.failures(failed))


if __name__ == "__main__":
    main()
