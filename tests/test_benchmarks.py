"""benchmarks/: the episode recorders count what dqn.py counts, run.py --quick works end to end,
a failed run shows in the table, and the figures it reports are the ones defined.
(tests/test_sweep_ray.py: the same runner on Ray.)"""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import gymnasium as gym
import pytest
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from episode_log import EpisodeLog, EpisodeRecorder, VectorEpisodeRecorder  # noqa: E402

RUN = os.path.join(REPO, "benchmarks", "run.py")


def read_log(path):
    with open(path) as f:
        return [(int(r["step"]), float(r["return"]), int(r["length"])) for r in csv.DictReader(f)]


def test_vector_recorder_matches_dqn_episodes(tiny_args, tmp_path, monkeypatch):
    """Around dqn.make_env's NEXT_STEP vector env, the recorder sees dqn.py's episodes at
    dqn.py's global steps: reset steps are not counted."""
    import dqn

    log = EpisodeLog(str(tmp_path / "episodes.csv"), launched=0.0)
    recorded = lambda *a, **kw: VectorEpisodeRecorder(dqn.make_env(*a, **kw), log)  # noqa: E731
    results = dqn.train(tiny_args(num_envs=3, eval_episodes=0), make_env=recorded)
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
    rows = [line for line in md.splitlines() if line.startswith("| ") and "CartPole-v1 (threshold" in line]
    has_sb3 = importlib.util.find_spec("stable_baselines3") is not None
    impls = ["dqn.py"] + (["SB3 DQN (rl-zoo)"] if has_sb3 else [])
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == impls
    if not has_sb3:
        assert "Stable-Baselines3 is not installed" in md
    assert "quoted and not measured here" in md and "488.69" in md
    assert md.splitlines()[0].endswith(f"runs {os.cpu_count()} at a time.")  # (--jobs' default)
    if importlib.util.find_spec("rliable"):  # IQM [95% CI]; one seed: an interval of one point
        assert all(row.split(" | ")[5].count("[") == 1 for row in rows)
        assert "| dqn.py | CartPole-v1 | 1 | " in md  # the across-envs table
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
    md = (out / "atari_breakout.md").read_text(encoding="utf-8")
    assert "| 1,500 |" in md and "--total-timesteps 1500" in md
    if importlib.util.find_spec("matplotlib"):
        assert (out / "atari_breakout.png").stat().st_size > 0


def test_a_failed_run_is_a_row_with_its_error(tmp_path):
    """A grid value dqn.py rejects: the sweep goes on, the run is in the table as failed with
    the error tyro reported, in results.json too, and the runner exits with 1."""
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, RUN, "--quick", "--seeds", "1", "--no-sb3",
                           "--grid", "learning-rate=abc", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 of 1 runs failed" in proc.stderr
    md = (out / "results.md").read_text(encoding="utf-8")
    [row] = [line for line in md.splitlines() if line.startswith("| dqn.py --learning-rate abc | CartPole-v1 (")]
    cells = row.split(" | ")
    assert cells[2] == "0 of 1" and cells[-1].startswith("seed 1: exit 2: Error parsing --learning-rate")
    assert "'abc'" in cells[-1]
    [run] = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert cells[-1] == f"seed 1: {run['error']} |" and run["returncode"] == 2
    assert (out / "runs" / "dqn--learning-rate=abc" / "CartPole-v1" / "seed1" / "stdout.txt").exists()


def test_ray_not_installed_is_one_line(tmp_path):
    """--ray where Ray cannot be imported: what to install, exit status 1, no traceback."""
    hide_ray = ("import runpy, sys; sys.modules['ray'] = None; sys.argv = sys.argv[1:]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", hide_ray, RUN, "--quick", "--ray", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == "error: --ray needs Ray: pip install -r benchmarks/requirements.txt\n"
    assert proc.stdout == "" and not os.listdir(tmp_path)


def test_grid_is_every_combination_named_by_its_flags():
    import run

    assert run.parse_grid([]) == [[]]
    grid = run.parse_grid(["learning-rate=1e-3,3e-4", "--n-step=1,3"])
    assert grid == [[("learning-rate", "1e-3"), ("n-step", "1")], [("learning-rate", "1e-3"), ("n-step", "3")],
                    [("learning-rate", "3e-4"), ("n-step", "1")], [("learning-rate", "3e-4"), ("n-step", "3")]]
    runs = run.plan_runs(["CartPole-v1", "BreakoutNoFrameskip-v4"], 2, grid, sb3=True, sb3_python=None)
    assert len(runs) == 2 * 2 * (4 + 1) - 2  # SB3 once per env and seed, and only where rl-zoo has settings
    first = runs[0]
    assert first["flags"] == ["--learning-rate", "1e-3", "--n-step", "1"]
    assert first["label"] == "dqn.py --learning-rate 1e-3 --n-step 1"
    assert first["variant"] == "dqn--learning-rate=1e-3--n-step=1"
    assert {r["impl"] for r in runs if r["env_id"] == "BreakoutNoFrameskip-v4"} == {"dqn_atari"}
    ids = ["Pong-v4", "ale_py:ALE/Pong-v5", "ALE/Pong-v5", "Acrobot-v1"]  # ale-py's, in any spelling
    assert [r["impl"] for r in run.plan_runs(ids, 1, [[]], sb3=False, sb3_python=None)] == \
        ["dqn_atari"] * 3 + ["dqn"]
    assert len({(r["variant"], r["env_id"], r["seed"]) for r in runs}) == len(runs)  # each its own run dir


def test_the_table_says_how_many_runs_ran_at_once_for_each_implementation():
    """Timings depend on it; with --reuse, the runs of one table may come from different sweeps."""
    import run

    ran = lambda label, at_once: {"label": label, "at_once": at_once}  # noqa: E731
    assert run.how_they_ran([ran("dqn.py", "1 at a time")] * 2) == "runs 1 at a time"
    assert run.how_they_ran([ran("dqn.py", "1 at a time"), ran("SB3", "2 at a time"), ran("dqn.py", "1 at a time")]) \
        == "dqn.py runs 1 at a time; SB3 runs 2 at a time"


def test_random_scores_are_what_random_policy_score_measures():
    import run

    for env_id, score in run.RANDOM_SCORES.items():
        assert round(run.random_policy_score(env_id), 1) == score, env_id


def test_an_env_is_solved_at_the_first_episode_whose_last_20_average_its_threshold():
    """run.py's table and compare_commits.sh both count "solved" with this one rule."""
    import run

    # CartPole's threshold is 475: 19 games of 0, then 500s; at game 37, the last 20 are one 0
    # and nineteen 500s, whose average is 475.0: enough
    returns = np.array([0.0] * 19 + [500.0] * 30)
    assert run.solve_index(returns, "CartPole-v1") == 37
    assert run.solve_index(returns[:37], "CartPole-v1") is None
    assert run.solve_index(np.full(25, 500.0), "CartPole-v1") == 19  # 20 episodes at least
    assert run.solve_index(returns, "MyEnv-v0") is None  # no threshold: never solved


def test_iqm_is_the_mean_of_the_middle_half():
    """Four runs: the IQM drops the best and the worst; the interval holds the point estimate."""
    import run

    rliable, error = run.load_rliable()
    if rliable is None:
        import pytest
        pytest.skip(f"rliable: {error}")
    stats = run.iqm_and_mean(np.array([[1.0], [2.0], [3.0], [100.0]]), rliable)
    iqm, low, high = stats["iqm"]
    assert iqm == 2.5 and low <= iqm <= high
    assert stats["mean"][0] == 26.5
    # across envs: a runs x envs matrix, runs resampled within each env
    stats = run.iqm_and_mean(np.array([[0.0, 1.0], [0.0, 1.0]]), rliable)
    assert stats["iqm"] == (0.5, 0.5, 0.5)


def test_the_same_scores_give_the_same_interval_every_time():
    """rliable resamples with numpy's global generator: the tables would change from one
    reading of the same runs to the next unless the bootstrap is seeded; numpy's global state
    is left as it was."""
    import run

    rliable, error = run.load_rliable()
    if rliable is None:
        import pytest
        pytest.skip(f"rliable: {error}")
    scores = np.arange(10.0)[:, None] ** 1.5
    first = run.iqm_and_mean(scores, rliable)
    np.random.seed(1)
    outside = np.random.get_state()[1].copy()
    assert run.iqm_and_mean(scores, rliable) == first
    assert (np.random.get_state()[1] == outside).all()


def test_atari_ids_train_with_dqn_atari_and_only_training_is_recorded(tmp_path):
    """An ALE id goes to dqn_atari.py; its evaluation games (an env it makes after the training
    env) are not counted as training episodes: the env steps are the budget's."""
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, RUN, "--envs", "BreakoutNoFrameskip-v4", "--seeds", "1",
                           "--total-timesteps", "1000", "--out", str(out), "--dqn-args", "--learning-starts", "500",
                           "--buffer-size", "1000", "--eval-episodes", "1", "--eval-max-steps", "300",
                           "--torch-threads", "1"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [run] = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert run["label"] == "dqn_atari.py" and run["total_steps"] == 1000
    assert run["steps"][-1] <= 1000 and len(run["returns"]) > 0


def test_the_readme_summary_and_the_full_table_are_written_between_their_markers(tmp_path):
    """--update-readme: per env, each implementation's mean greedy return, seeds solved and the
    median steps / seconds to solve, in the README; whatever stood between the markers goes."""
    import run

    def result(variant, seed, eval_mean, solve_step, solve_s):
        return dict(env_id="CartPole-v1", variant=variant, seed=seed, error=None, eval_mean=eval_mean,
                    solve_step=solve_step, solve_s=solve_s)

    results = [result("dqn", 1, 500.0, 20000, 3.0), result("dqn", 2, 480.0, 30000, 5.0),
               result("dqn", 3, 490.0, 26000, 4.0), result("sb3", 1, 300.0, None, None)]
    text = run.summary(results, ["CartPole-v1"], {"dqn": "dqn.py", "sb3": "SB3 DQN"})
    assert "| CartPole-v1 | 490.0, 3/3, 26,000 / 4.0 s | 300.0, 0/1, - |" in text.splitlines()
    page = tmp_path / "page.md"
    page.write_text("# Title\n<!-- results:start -->\nold\n<!-- results:end -->\nafter\n")
    run.update_section(str(page), text + "\n")
    assert page.read_text(encoding="utf-8") == f"# Title\n<!-- results:start -->\n{text}\n<!-- results:end -->\nafter\n"


def atari100k_record(game, seed, score, minutes, run_dir="runs/x"):
    return dict(game=game, seed=seed, score=score, games=[score] * 30, minutes=minutes, cpu="Test CPU, 2 cores",
                run_dir=run_dir)


def test_atari100k_table_has_the_mean_score_its_human_normalised_score_and_the_minutes(monkeypatch):
    """Per game: runs, mean ± std of the runs' scores, (mean - random) / (human - random) with
    Kaiser et al.'s random and human scores, minutes per run (mean and max); a game without
    runs has no row."""
    import atari100k
    import run

    monkeypatch.setattr(run, "BOOTSTRAP_REPS", 200)  # (the IQM's interval: fast, not the figure tested)

    records = [atari100k_record("Pong", 1, -20.0, 30.0), atari100k_record("Pong", 2, -10.0, 40.0),
               atari100k_record("Pong", 3, -12.0, 50.0), atari100k_record("Breakout", 1, 10.0, 20.0),
               atari100k_record("Breakout", 2, 20.0, 22.0)]
    text = atari100k.table(records, ["Breakout", "Pong", "SpaceInvaders"])
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in text.splitlines()[2:]
            if line.startswith("| ")}
    assert set(rows) == {"Breakout", "Pong"}
    pong, breakout = rows["Pong"], rows["Breakout"]
    assert pong[1] == "3" and pong[2] == f"-14.0 ± {np.std([-20, -10, -12]):.1f}"
    assert float(pong[4]) == round((-14.0 - -20.7) / (14.6 - -20.7), 3)  # 0.190
    assert pong[-1] == "40.0 (max 50.0) |"
    assert pong[3].startswith("-14.0 [") or (pong[3] == "-" and "rliable could not" in text)  # 3 runs: no trim
    assert breakout[1] == "2" and breakout[2] == "15.0 ± 5.0"
    assert float(breakout[4]) == round((15.0 - 1.7) / (30.5 - 1.7), 3)  # 0.462
    assert breakout[-1] == "21.0 (max 22.0) |"
    assert "mean of its 30 evaluation games" in text and "Pong 3: -12.0" in text and "Test CPU, 2 cores" in text


def test_update_section_replaces_only_what_stands_between_its_own_markers(tmp_path):
    import run

    page = tmp_path / "atari.md"
    page.write_text("# Atari\n<!-- results:start -->\nresults\n<!-- results:end -->\nmiddle\n"
                    "<!-- atari100k:start -->\nold table\n<!-- atari100k:end -->\nend\n")
    run.update_section(str(page), "new table\n", name="atari100k")
    assert page.read_text(encoding="utf-8") == ("# Atari\n<!-- results:start -->\nresults\n<!-- results:end -->\nmiddle\n"
                                "<!-- atari100k:start -->\nnew table\n<!-- atari100k:end -->\nend\n")
    run.update_section(str(page), "new results\n")  # name="results", as before
    assert page.read_text(encoding="utf-8") == ("# Atari\n<!-- results:start -->\nnew results\n<!-- results:end -->\nmiddle\n"
                                "<!-- atari100k:start -->\nnew table\n<!-- atari100k:end -->\nend\n")


def test_atari100k_write_page_puts_every_kept_runs_table_and_curves_between_its_markers(tmp_path, monkeypatch):
    """The run.json of each results/runs/atari100k/<Game>/seed<N>/ is read back; the table and a
    curve per game go between the atari100k markers of the page, and nothing else changes."""
    import atari100k
    import run

    monkeypatch.setattr(run, "BOOTSTRAP_REPS", 200)
    monkeypatch.setattr(atari100k, "OUT", str(tmp_path / "results"))
    monkeypatch.setattr(atari100k, "DOC", str(tmp_path / "atari.md"))
    for seed, score in [(1, -20.0), (3, -10.0)]:
        run_dir = tmp_path / f"pong{seed}"
        run_dir.mkdir()
        (run_dir / "metrics.csv").write_text("step,time_s,episode,return,length,epsilon,loss\n"  # dqn.py's
                                             "800,9.5,1,-21.0,800,0.880,nan\n1700,20.1,2,-19.0,900,0.742,0.01\n")
        os.makedirs(atari100k.seed_dir("Pong", seed))
        with open(os.path.join(atari100k.seed_dir("Pong", seed), "run.json"), "w") as f:
            json.dump(atari100k_record("Pong", seed, score, 30.0, run_dir=str(run_dir)), f)
    os.makedirs(atari100k.seed_dir("Breakout", 1))  # a run without its run.json: not finished
    page = "# Atari\n<!-- results:start -->\nkept\n<!-- results:end -->\n<!-- atari100k:start -->\nold\n" \
           "<!-- atari100k:end -->\nend\n"
    (tmp_path / "atari.md").write_text(page)
    atari100k.write_page()
    text = (tmp_path / "atari.md").read_text(encoding="utf-8")
    head, rest = text.split("<!-- atari100k:start -->\n")
    section, tail = rest.split("<!-- atari100k:end -->")
    assert head == page.split("<!-- atari100k:start -->")[0] and tail == "\nend\n"
    assert "| Pong | 2 | -15.0 ± 5.0 |" in section and "| Breakout |" not in section and "old" not in section
    if importlib.util.find_spec("matplotlib"):
        assert "![Pong](../benchmarks/results/atari100k_pong.png)" in section
        assert os.path.getsize(tmp_path / "results" / "atari100k_pong.png") > 0


def test_reuse_reads_back_only_a_whole_record_made_with_the_same_flags(tmp_path):
    """--reuse: a run made with other --total-timesteps or --dqn-args is trained again, and so is
    a damaged record (not json, not a dict, its episodes.csv gone); a whole one is read back."""
    import run

    [plan] = run.plan_runs(["CartPole-v1"], 1, [[]], sb3=False, sb3_python=None)
    root = run.run_dir(str(tmp_path), plan)
    os.makedirs(root)
    for name in ["episodes.csv", "summary.json"]:
        open(os.path.join(root, name), "w").close()
    record = {**plan, "extra": ["--total-timesteps", "3000"], "error": None}
    with open(os.path.join(root, "run.json"), "w") as f:
        json.dump(record, f)
    assert run.finished_run(str(tmp_path), plan, ["--total-timesteps", "3000"])["extra"] == record["extra"]
    assert run.finished_run(str(tmp_path), plan, ["--total-timesteps", "6000"]) is None
    assert run.finished_run(str(tmp_path), plan, []) is None
    os.remove(os.path.join(root, "episodes.csv"))
    assert run.finished_run(str(tmp_path), plan, ["--total-timesteps", "3000"]) is None
    for text in ["{not json", "[1, 2]"]:
        with open(os.path.join(root, "run.json"), "w") as f:
            f.write(text)
        assert run.finished_run(str(tmp_path), plan, []) is None


def test_runners_refuse_bad_flags_before_writing_anything(tmp_path):
    """run.py: counts below 1 and unknown envs; atari100k.py: any flag but its own (a run of the
    table follows the protocol); atari_speed.py and agents.py: a bad value. One message, exit 1
    or 2 (argparse's), nothing written."""
    script = lambda name: os.path.join(REPO, "benchmarks", name)  # noqa: E731
    out = ["--out", str(tmp_path / "out")]
    for argv, words in [([RUN, "--jobs", "0", *out], "--jobs: '0' is not a whole number >= 1"),
                        ([RUN, "--seeds", "-1", *out], "--seeds: '-1' is not a whole number >= 1"),
                        ([RUN, "--envs", "NoSuchEnv-v0", *out], "--envs NoSuchEnv-v0:"),
                        ([script("atari100k.py"), "--games", "Pong", "--seeds", "9", "--total-timesteps", "5"],
                         "unrecognized arguments: --total-timesteps 5"),
                        ([script("atari_speed.py"), "--device", "nonsense"], "--device nonsense"),
                        ([script("agents.py"), "--width", "0", *out], "--width, --fps and --seconds"),
                        ([script("agents.py"), "--runs", str(tmp_path / "none"), *out], "no trained run")]:
        proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode in (1, 2) and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert os.listdir(tmp_path) == []
    assert not os.path.exists(os.path.join(REPO, "benchmarks", "results", "runs", "atari100k", "Pong", "seed9"))


@pytest.mark.skipif(sys.platform == "win32", reason="os.kill(SIGINT) ends the process on Windows; "
                    "a Ctrl-C from a worker thread cannot be sent there")
def test_ctrl_c_on_a_sweep_starts_no_other_run_and_keeps_no_interrupted_one(tmp_path, monkeypatch):
    """The runs get Ctrl-C too, and exit 130 with a checkpoint in their temp dir: not a result."""
    import signal

    import pytest
    import run

    started = []

    def train_run(plan, repo, extra):
        started.append(plan["seed"])
        os.kill(os.getpid(), signal.SIGINT)  # the Ctrl-C, to the runner's main thread
        code = -2  # (a child killed by the SIGINT before its handler was set; 130 after)
        return {"record": {**plan, "returncode": code, "error": f"exit {code}"}, "files": {"stdout.txt": b""}}

    monkeypatch.setattr(run, "train_run", train_run)
    plans = run.plan_runs(["CartPole-v1"], 3, [[]], sb3=False, sb3_python=None)
    with pytest.raises(SystemExit) as exit_info:
        run.sweep_here(plans, str(tmp_path), {"dqn": []}, jobs=1)
    assert exit_info.value.code == 130 and started == [1] and os.listdir(tmp_path) == []
