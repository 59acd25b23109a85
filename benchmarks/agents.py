"""The trained agents, moving: a small GIF of each env's greedy policy, for the README.

    python benchmarks/run.py        # first: the benchmark's trained runs, in benchmarks/results/runs/
    python benchmarks/agents.py     # then: benchmarks/results/agents/<env>.gif

Each GIF is one evaluation episode of the seed-1 run of the benchmark, recorded by dqn.py's
own `--eval-only --capture-video` (the same episode seed as the run's first evaluation
episode) from a copy of the run's folder, so that the benchmark's records stay as they were;
then shrunk to --width pixels and --fps frames a second, at most --seconds long. Needs moviepy
(pip install moviepy).
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVS = ["CartPole-v1", "Acrobot-v1", "MountainCar-v0", "LunarLander-v3"]


def animate(run_dir: str, path: str, width: int, fps: int, seconds: float) -> None:
    from moviepy.video.io.VideoFileClip import VideoFileClip

    with tempfile.TemporaryDirectory() as tmp:
        copy = shutil.copytree(run_dir, os.path.join(tmp, "run"))
        subprocess.run([sys.executable, os.path.join(REPO, "dqn.py"), "--eval-only", copy,
                        "--capture-video", "--eval-episodes", "1"], check=True)
        with VideoFileClip(os.path.join(copy, "videos", "eval-episode-0.mp4")) as clip:
            clip = clip.subclipped(0, min(clip.duration, seconds)).resized(width=width)
            clip.write_gif(path, fps=fps, logger=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    runs = os.path.join(REPO, "benchmarks", "results", "runs", "dqn")
    parser.add_argument("--runs", default=runs, help="dqn.py's runs of a sweep: <run.py --out>/runs/dqn")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "agents"))
    parser.add_argument("--envs", nargs="+", default=ENVS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--width", type=int, default=240)
    parser.add_argument("--fps", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    opts = parser.parse_args()
    if min(opts.width, opts.fps, opts.seconds) <= 0:
        parser.error("--width, --fps and --seconds must be above 0")
    found = {env_id: glob.glob(os.path.join(opts.runs, env_id, f"seed{opts.seed}", "*", "model.pt"))
             for env_id in opts.envs}
    for env_id, models in found.items():
        if not models:
            sys.exit(f"error: no trained run of {env_id} seed {opts.seed} under {opts.runs}: "
                     "run python benchmarks/run.py first (or --runs <its --out>/runs/dqn)")
    os.makedirs(opts.out, exist_ok=True)
    for env_id, models in found.items():
        path = os.path.join(opts.out, f"{env_id}.gif")
        animate(os.path.dirname(models[0]), path, opts.width, opts.fps, opts.seconds)
        print(f"{path}: {os.path.getsize(path) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
