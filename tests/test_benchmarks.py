"""benchmarks/: the episode recorders count what dqn.py counts, and run.py --quick works end to end."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from episode_log import EpisodeLog, EpisodeRecorder, VectorEpisodeRecorder  # noqa: E402


def read_log(path):
    with open(path) as f:
        return [(int(r["step"]), float(r["return"]), int(r["length"])) for r in csv.DictReader(f)]


def test_vector_recorder_matches_dqn_episodes(tiny_args, tmp_path, monkeypatch):
    """Around dqn.make_env's NEXT_STEP vector env, the recorder sees dqn.py's episodes at
    dqn.py's global steps: reset steps are not counted."""
    import dqn

    log = EpisodeLog(str(tmp_path / "episodes.csv"), launched=0.0)
    make_env = dqn.make_env
    monkeypatch.setattr(dqn, "make_env", lambda *a, **kw: VectorEpisodeRecorder(make_env(*a, **kw), log))
    results = dqn.train(tiny_args(num_envs=3, eval_episodes=0))
    log.close()
    rows = read_log(tmp_path / "episodes.csv")
    assert len(rows) == len(results.episode_returns) > 10
    assert [r[0] for r in rows] == results.episode_steps
    assert np.allclose([r[1] for r in rows], results.episode_returns)
    assert 300 <= log.steps < 300 + 3  # dqn.py's last global_step: total_timesteps, rounded up a batch


def test_single_env_recorder(tmp_path):
    log = EpisodeLog(str(tmp_path / "episodes.csv"), launched=0.0)
    env = gym.wrappers.RecordEpisodeStatistics(EpisodeRecorder(gym.make("tests/Chain-v0"), log))
    env.reset(seed=0)
    expected = []
    for step in range(200):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        if terminated or truncated:
            expected.append((step + 1, float(info["episode"]["r"]), int(info["episode"]["l"])))
            env.reset()
    log.close()
    assert read_log(tmp_path / "episodes.csv") == expected
    assert log.steps == 200


def test_quick_benchmark_end_to_end(tmp_path):
    """The --quick path of benchmarks/run.py, made tiny: one seed, 1500 env steps per run."""
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "run.py"), "--quick", "--seeds", "1",
         "--total-timesteps", "1500", "--out", str(out)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out / "results.md") as f:
        md = f.read()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "CartPole-v1" in line]
    has_sb3 = importlib.util.find_spec("stable_baselines3") is not None
    impls = ["dqn.py"] + (["SB3 DQN (rl-zoo)"] if has_sb3 else [])
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == impls
    if not has_sb3:
        assert "Stable-Baselines3 is not installed" in md
    assert "quoted and not measured here" in md and "488.69" in md
    for impl in ["dqn"] + (["sb3"] if has_sb3 else []):
        run_dir = out / "runs" / impl / "CartPole-v1" / "seed1"
        episodes = read_log(run_dir / "episodes.csv")
        with open(run_dir / "summary.json") as f:
            summary = json.load(f)
        assert summary["env_steps"] >= 1500 and len(summary["eval_returns"]) == 10
        assert episodes and episodes[-1][0] <= summary["env_steps"]
        assert summary["first_step_s"] > 0  # seconds since the process was launched
    assert os.path.exists(out / "results.json")
    assert os.path.exists(out / "curves.png") == (importlib.util.find_spec("matplotlib") is not None)


def test_atari_curve_writes_table_and_plot(tmp_path):
    """benchmarks/atari_curve.py end to end on a tiny budget: table and plot from the run's metrics."""
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "atari_curve.py"),
                           "--total-timesteps", "1500", "--learning-starts", "500", "--eval-episodes", "1",
                           "--torch-threads", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (out / "atari_breakout.md").read_text()
    assert "| 1,500 |" in md and "--total-timesteps 1500" in md
    if importlib.util.find_spec("matplotlib"):
        assert (out / "atari_breakout.png").stat().st_size > 0
