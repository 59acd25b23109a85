"""The Atari 100k benchmark of `dqn_atari.py --preset atari100k`, run on this machine.

    python benchmarks/atari100k.py                   # Breakout, Pong, SpaceInvaders, seeds 1-3
    python benchmarks/atari100k.py --games Pong --seeds 1     # one run
    python benchmarks/atari100k.py --table-only      # the table and curves from the runs kept
    python benchmarks/atari100k.py --profile         # where a training step's time goes

The protocol (Kaiser et al. 2020; Agarwal et al. 2021): 100k agent steps (400k frames) of
training, no sticky actions, a lost life terminal for learning only, games cut at 27,000 steps
(108k frames); then the final policy plays 30 games at epsilon 0.001, scored with the game's
real (unclipped) score. Each run is `python dqn_atari.py --env-id ALE/<Game>-v5 --preset
atari100k --seed S`, one at a time (torch uses both cores), into
benchmarks/results/runs/atari100k/<Game>/seed<S>/. A finished run (its run.json) is read back,
not run again; an unfinished one with a checkpoint is resumed (with its replay buffer).

Then it writes, between the atari100k markers of docs/atari.md, a table per game (the mean
of the runs' scores, their IQM with a 95% bootstrap confidence interval over seeds, the
human-normalised score (score - random) / (human - random), minutes per run) beside the
published figures, and a learning curve per game (benchmarks/results/atari100k_<game>.png).
"""

import argparse
import csv
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "benchmarks")]
import run as runner  # noqa: E402  (benchmarks/run.py: the IQM, its interval, the markers)

OUT = os.path.join(REPO, "benchmarks", "results")
DOC = os.path.join(REPO, "docs", "atari.md")
# Mean scores at 100k steps: random and human (Kaiser et al. 2020), DrQ(epsilon) (Agarwal et al.
# 2021, 100 runs; the range is over its published evaluations), BBF (Schwarzer et al. 2023).
PUBLISHED = {"Breakout": dict(random=1.7, human=30.5, drq="16.1 to 19.8", bbf="357"),
             "Pong": dict(random=-20.7, human=14.6, drq="-9.1 to -8.5", bbf="16.4"),
             "SpaceInvaders": dict(random=148.0, human=1668.7, drq="-", bbf="750.9")}
TARGETS = {"Breakout": 16, "Pong": -9, "SpaceInvaders": 400}  # the mean the preset aims at


def seed_dir(game: str, seed: int) -> str:
    return os.path.join(OUT, "runs", "atari100k", game, f"seed{seed}")


def train(game: str, seed: int, extra: list) -> dict:
    """One run (or the rest of an interrupted one); returns its record, also saved as run.json."""
    root = seed_dir(game, seed)
    checkpoints = [os.path.join(d, "checkpoint.pt") for d in run_dirs(root)]
    checkpoints = [c for c in checkpoints if os.path.exists(c)]
    before = 0.0  # training seconds already in the checkpoint
    if checkpoints:
        import torch
        saved = torch.load(checkpoints[0], map_location="cpu", weights_only=True, mmap=True)
        before = saved["state"]["train_seconds"]
        del saved  # (its replay buffer is the resumed run's to hold)
        flags = ["--resume", checkpoints[0], *extra]
    else:
        shutil.rmtree(root, ignore_errors=True)
        flags = ["--env-id", f"ALE/{game}-v5", "--preset", "atari100k", "--seed", str(seed),
                 "--output-dir", root, "--checkpoint-buffer", *extra]
    command = [sys.executable, os.path.join(REPO, "dqn_atari.py"), *flags]
    print(" ".join(["python", "dqn_atari.py", *flags]), flush=True)
    os.makedirs(root, exist_ok=True)
    launched = time.time()
    with open(os.path.join(root, "stdout.txt"), "a") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
        try:
            code = proc.wait()
        except KeyboardInterrupt:  # the run got Ctrl-C too: it writes its checkpoint
            code = proc.wait()
    wall = time.time() - launched
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        sys.exit(f"{game} seed {seed} stopped with a checkpoint: the same command goes on with it")
    if code != 0:
        sys.exit(f"{game} seed {seed} failed (exit {code}): see {root}/stdout.txt")
    (run_dir,) = run_dirs(root)
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    record = dict(game=game, seed=seed, run_dir=os.path.relpath(run_dir, REPO),
                  minutes=(before + wall) / 60, resumed=bool(checkpoints),
                  score=float(np.mean(summary["eval_returns"])), games=summary["eval_returns"],
                  cpu=runner_cpu(), date=time.strftime("%Y-%m-%d"))
    with open(os.path.join(root, "run.json"), "w") as f:
        json.dump(record, f)
    return record


def run_dirs(root: str) -> list:
    """The run directories dqn_atari.py made in root (one per run)."""
    if not os.path.isdir(root):
        return []
    return [os.path.join(root, d) for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))]


def runner_cpu() -> str:
    from atari_speed import cpu_name  # (benchmarks/ is on sys.path, above)
    return f"{cpu_name()}, {os.cpu_count()} cores"


def finished(game: str, seed: int) -> dict | None:
    path = os.path.join(seed_dir(game, seed), "run.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError:  # (json's error)
        sys.exit(f"{path} is not a run record: remove it and run that seed again")


def table(records: list, games: list) -> str:
    rliable, error = runner.load_rliable()
    lines = ["| game | runs | score: mean ± std over runs | IQM [95% CI] | human-normalised | "
             "random | human | DrQ(ε) | BBF | minutes per run |", "|---" * 10 + "|"]
    for game in games:
        rs = [r for r in records if r["game"] == game]
        if not rs:
            continue
        scores = np.array([r["score"] for r in rs])
        p = PUBLISHED[game]
        ok = rliable and len(rs) > 1
        iqm = runner.fmt_ci(runner.iqm_and_mean(scores[:, None], rliable)["iqm"]) if ok else "-"
        hns = (scores.mean() - p["random"]) / (p["human"] - p["random"])
        minutes = np.array([r["minutes"] for r in rs])
        lines.append(f"| {game} | {len(rs)} | {runner.fmt(list(scores), 1)} | {iqm} | {hns:.3f} | "
                     f"{p['random']} | {p['human']} | {p['drq']} | {p['bbf']} | "
                     f"{minutes.mean():.1f} (max {minutes.max():.1f}) |")
    seeds = ", ".join(f"{r['game']} {r['seed']}: {r['score']:.1f}" for r in records)
    cpus = sorted({r["cpu"] for r in records})
    note = (f"\n\nEach run's score is the mean of its {len(records[0]['games'])} evaluation games; "
            f"per run: {seeds}. The IQM is over runs (with 3, their mean; its interval a "
            "bootstrap over them). Minutes: from launch to the end of the evaluation (a resumed "
            f"run: its training before the checkpoint, then the rest). Ran on {'; '.join(cpus)} "
            f"({platform.system()}), one run at a time, float32.")
    for r in records:  # what the record of a run says of it (written by hand)
        note += f" {r['game']} seed {r['seed']}: {r['note']}." if r.get("note") else ""
    if error:
        note += f" IQM left out: rliable could not be imported ({error})."
    return "\n".join(lines) + note


def plot(records: list, game: str) -> str | None:
    """Game returns (a trailing mean of 20 games) against env steps, a line per seed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r in (r for r in records if r["game"] == game):
        with open(os.path.join(REPO, r["run_dir"], "metrics.csv")) as f:
            rows = list(csv.DictReader(f))
        steps = np.array([int(row["step"]) for row in rows])
        returns = np.array([float(row["return"]) for row in rows])
        ax.plot(steps, runner.trailing_mean(returns), label=f"seed {r['seed']}")
    p = PUBLISHED[game]
    ax.axhline(p["random"], color="gray", linestyle=":", label="random")
    ax.axhline(TARGETS[game], color="black", linestyle="--", linewidth=1, label="target")
    ax.set_xlabel("env steps (4 frames each)")
    ax.set_ylabel("game score, mean of the last 20")
    ax.set_title(f"--preset atari100k, {game}: training games (epsilon 0.01)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(OUT, f"atari100k_{game.lower()}.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def profile(steps: int) -> str:
    """Milliseconds per part of a training step at the preset's settings, in this process."""
    import torch
    import dqn
    import dqn_atari
    args = dqn.preset_args("ALE/Pong-v5", dqn_atari.Args, dqn_atari.PRESETS, preset="atari100k",
                           device="cpu")
    torch.set_num_threads(args.torch_threads)
    envs = dqn_atari.make_env(args, 1)
    space, n_actions = envs.single_observation_space, int(envs.single_action_space.n)
    q_network = dqn_atari.QNetwork(space, n_actions, args)
    target_network = dqn_atari.QNetwork(space, n_actions, args)
    rng, device = np.random.default_rng(0), torch.device("cpu")
    optimizer = dqn_atari.make_optimizer(q_network.parameters(), args, device)  # the preset's Adam
    rb = dqn_atari.ReplayBuffer(space, args, seed=0)
    obs, _ = envs.reset(seed=0)
    autoreset = np.zeros(1, bool)
    for _ in range(args.learning_starts):
        actions = rng.integers(0, n_actions, 1)
        next_obs, rewards, terminated, truncated, infos = envs.step(actions)
        rb.add(obs, actions, rewards, next_obs, terminated, truncated, reset=autoreset)
        autoreset, obs = infos.get("_episode", np.zeros(1, bool)), next_obs
    parts = {
        "env step (ale-py, 4 frames)": lambda: envs.step(rng.integers(0, n_actions, 1)),
        "acting (a forward pass of 1 stack)": lambda: dqn.select_action(q_network, obs, 0.0,
                                                                        n_actions, rng, device),
        "sampling 32 transitions (10-step)": lambda: rb.sample(args.batch_size, device),
        "the gradient step (batch 32)": lambda: dqn.gradient_step(
            q_network, target_network, optimizer, batch, args),
        "the target update (a copy)": lambda: dqn.update_target(target_network, q_network, 1.0),
    }
    batch = rb.sample(args.batch_size, device)
    times = {}
    for name, part in parts.items():
        part()  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            part()
        times[name] = (time.perf_counter() - start) / steps * 1e3
    stacks = batch[0]
    start = time.perf_counter()
    for _ in range(steps):
        rb.random_shift(stacks), rb.random_shift(stacks)
    times["  of which the random shift of obs and next_obs"] = (
        (time.perf_counter() - start) / steps * 1e3)
    envs.close()
    total = sum(v for k, v in times.items() if not k.startswith(" "))
    lines = [f"Where a training step's time goes, dqn_atari.py --preset atari100k (Pong, "
             f"{args.torch_threads} torch threads, float32, {runner_cpu()}), {steps} calls each:",
             *(f"  {name:50} {ms:6.2f} ms" for name, ms in times.items()),
             f"  {'sum':50} {total:6.2f} ms: {1e3 / total:.1f} steps/s, "
             f"100k steps in {100_000 * total / 6e4:.0f} min"]
    return "\n".join(lines)


def profile_run(learning_steps: int) -> str:
    """Milliseconds per env step of each part inside a real run of the preset (dqn.train on
    Pong), after its first gradient step (which imports torch._dynamo): each part's calls timed
    where the loop makes them, and what the loop spends besides them."""
    import tempfile
    import dqn
    import dqn_atari
    parts = {"env step (ale-py, 4 frames, the learning signal)": (dqn_atari.LearningSignal, "step"),
             "acting (epsilon-greedy, a forward pass of 1 stack)": (dqn, "select_action"),
             "storing the step": (dqn_atari.ReplayBuffer, "add"),
             "sampling 32 transitions (10-step, shifted)": (dqn_atari.ReplayBuffer, "sample"),
             "the gradient step (batch 32)": (dqn, "gradient_step"),
             "the target update (a copy)": (dqn, "update_target")}
    spent = dict.fromkeys(parts, 0.0)
    clock = {"learning since": None, "steps": 0}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = function(*args, **kwargs)
            if clock["learning since"] is not None:
                spent[name] += time.perf_counter() - start
                clock["steps"] += name.startswith("env step")
            elif name.startswith("the gradient"):  # the first: the clock starts after it
                clock["learning since"] = time.perf_counter()
            return result
        return wrapper

    originals = {name: getattr(owner, attr) for name, (owner, attr) in parts.items()}
    for name, (owner, attr) in parts.items():
        setattr(owner, attr, timed(name, originals[name]))
    try:
        with tempfile.TemporaryDirectory() as out:
            args = dqn.preset_args("ALE/Pong-v5", dqn_atari.Args, dqn_atari.PRESETS,
                                   preset="atari100k", device="cpu", output_dir=out,
                                   total_timesteps=1_600 + learning_steps, eval_episodes=0,
                                   checkpoint_every=0, save_model=False)
            stopped_by = dqn_atari.train(args, verbose=False).stopped_by
            if stopped_by:  # Ctrl-C or SIGTERM: no partial profile
                sys.exit(128 + stopped_by)
            wall = time.perf_counter() - clock["learning since"]
    finally:
        for name, (owner, attr) in parts.items():
            setattr(owner, attr, originals[name])
    steps = clock["steps"]
    times = {name: seconds / steps * 1e3 for name, seconds in spent.items()}
    times["the rest of the loop"] = wall / steps * 1e3 - sum(times.values())
    return "\n".join([
        f"Inside a run (dqn_atari.train, Pong, the preset, {learning_steps} steps of learning "
        f"after its {args.learning_starts} first; {args.torch_threads} torch threads, float32, "
        f"{runner_cpu()}), ms per env step:",
        *(f"  {name:50} {ms:6.2f} ms" for name, ms in times.items()),
        f"  {'a step, all in':50} {wall / steps * 1e3:6.2f} ms: {steps / wall:.1f} steps/s, "
        f"100k steps in {100_000 * wall / steps / 60:.0f} min"])


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", nargs="+", default=list(PUBLISHED), choices=list(PUBLISHED))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--table-only", action="store_true", help="no training: the table of the "
                        "runs already kept")
    parser.add_argument("--profile", action="store_true", help="only time the parts of a step, "
                        "apart and inside a short run")
    parser.add_argument("--device", help="passed on to dqn_atari.py (default: its own, cuda if "
                        "there is one); no other flag is: a run follows the protocol")
    opts = parser.parse_args()
    extra = ["--device", opts.device] if opts.device else []
    if opts.profile:
        text = profile(200) + "\n\n" + profile_run(2_000)
        print(text)
        with open(os.path.join(OUT, "atari100k_profile.txt"), "w") as f:
            f.write(text + "\n")
        return
    for game in opts.games:
        for seed in opts.seeds:
            if finished(game, seed) is None and not opts.table_only:
                record = train(game, seed, extra)
                print(f"{game} seed {seed}: {record['score']:.1f} in {record['minutes']:.1f} min",
                      flush=True)
                write_page()  # after every run: the page shows every run finished so far
    write_page()


def write_page() -> None:
    """The table and curves of every finished run kept, into docs/atari.md."""
    root = os.path.join(OUT, "runs", "atari100k")
    records = [r for game in PUBLISHED for seed in range(1, 100)
               if os.path.isdir(root) and (r := finished(game, seed))]
    if not records:
        sys.exit(f"no finished run under {root}: run python benchmarks/atari100k.py first")
    games = [g for g in PUBLISHED if any(r["game"] == g for r in records)]
    section = table(records, games) + "\n"
    for game in games:
        path = plot(records, game)
        if path:
            section += f"\n![{game}](../benchmarks/results/{os.path.basename(path)})\n"
    runner.update_section(DOC, section, "atari100k")


if __name__ == "__main__":
    main()
