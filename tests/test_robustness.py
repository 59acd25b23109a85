"""What a user may try, in both files: odd envs, bad input, tiny budgets, interruptions,
a trained agent evaluated again. Each test names the behaviour it protects."""

import csv
import json
import os
import pickle
import signal
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import dqn
import dqn_atari

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOTH = pytest.mark.parametrize("module", [dqn, dqn_atari], ids=["dqn", "dqn_atari"])


def tiny(module, tmp_path, **overrides):
    if module is dqn:
        settings = dict(env_id="tests/Chain-v0", hidden_sizes=(16,), batch_size=16)
    else:
        settings = dict(env_id="tests/Square-v0", batch_size=8, target_network_frequency=50, device="cpu",
                        torch_threads=1)
    settings.update(total_timesteps=400, learning_starts=100, buffer_size=1_000, eval_episodes=3,
                    output_dir=str(tmp_path), log_interval=10**6)
    return module.Args(**{**settings, **overrides})


# ---------------------------------------------------------------------------
# The learned value, end to end through train()


@BOTH
@pytest.mark.parametrize("n_step", [1, 3])
def test_learned_q_equals_the_closed_form_on_a_time_limited_constant_reward(module, n_step, tmp_path):
    """Reward 1 for ever, cut by a time limit: Q = 1 / (1 - gamma) = 2 at gamma 0.5. Storing a
    truncation as a termination, or bootstrapping with gamma ** (n - 1), learns another value."""
    pixels = module is dqn_atari
    args = tiny(module, tmp_path, env_id="tests/ConstantPixels-v0" if pixels else "tests/Constant-v0",
                gamma=0.5, n_step=n_step, total_timesteps=2_500, learning_rate=3e-3, batch_size=32,
                train_frequency=1, target_network_frequency=50, eval_episodes=0, learning_starts=100,
                **({} if pixels else dict(hidden_sizes=(16,))))
    results = module.train(args, verbose=False)
    obs = torch.zeros((1, 4, 36, 36), dtype=torch.uint8) if pixels else torch.zeros(1, dtype=torch.int64)
    assert results.q_network(obs)[0].tolist() == pytest.approx([2.0, 2.0], abs=0.05)
    with open(os.path.join(results.output_dir, "metrics.csv")) as f:  # the mean Q of each batch
        last = list(csv.DictReader(f))[-1]
    assert float(last["q"]) == pytest.approx(2.0, abs=0.05)


def test_bf16_computes_in_bfloat16_and_still_learns_the_closed_form(tmp_path, monkeypatch):
    """dqn_atari.py --bf16: the layers run in bfloat16, the Q-values come out float32, and
    the learned value is the one float32 learns. On a CPU without bfloat16 instructions
    (AVX2, Apple silicon), where --bf16 falls back to float32, the bf16 path is forced."""
    monkeypatch.setattr(dqn_atari, "bf16_instructions", lambda: True)
    args = tiny(dqn_atari, tmp_path, env_id="tests/ConstantPixels-v0", gamma=0.5, total_timesteps=2_500,
                learning_rate=3e-3, batch_size=32, train_frequency=1, target_network_frequency=50,
                eval_episodes=0, learning_starts=100, bf16=True)
    q_network = dqn_atari.train(args, verbose=False).q_network
    dtypes = []
    q_network.conv.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    q = q_network(torch.zeros((1, 4, 36, 36), dtype=torch.uint8))
    assert dtypes == [torch.bfloat16] and q.dtype == torch.float32
    assert q[0].tolist() == pytest.approx([2.0, 2.0], abs=0.05)


def test_a_torch_without_its_private_bf16_checks_reads_as_no_bfloat16_instructions(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert dqn_atari.bf16_instructions() is False
    assert dqn_atari.Args(bf16=True, device="cpu").bf16 is False


# ---------------------------------------------------------------------------
# Every user's machine: Windows, Apple's GPUs


@BOTH
def test_training_and_evaluation_work_without_os_sysconf(module, tmp_path, monkeypatch):
    """Windows has no os.sysconf: the memory check is skipped there, nothing else changes."""
    monkeypatch.delattr(os, "sysconf", raising=False)
    results = module.train(tiny(module, tmp_path), verbose=False)
    assert len(results.eval_returns) == 3
    again = module.Args(eval_only=results.output_dir, eval_episodes=3, device="cpu")
    assert dqn.evaluate_saved(again, module.make_env, module.QNetwork) == results.eval_returns


class Float64Env(gym.Env):
    """A Box of float64, numpy's default dtype and so common in the envs people write."""
    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), dtype=np.float64)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 3), {}

    def step(self, action):
        return self.np_random.uniform(-1, 1, 3), float(action), False, False, {}


def test_float64_observations_reach_the_device_as_float32(tmp_path):
    """Apple's GPUs (mps) have no float64: what select_action and the buffer's sample send to
    the device is float32, and the buffer stores float32."""
    if "tests/Float64-v0" not in gym.registry:
        gym.register("tests/Float64-v0", entry_point=Float64Env, max_episode_steps=20)
    seen = []

    class QNetwork(dqn.QNetwork):  # what reaches the network: select_action's, sample's
        def forward(self, obs):
            seen.append(obs.dtype)
            return super().forward(obs)

    results = dqn.train(tiny(dqn, tmp_path, env_id="tests/Float64-v0", eval_episodes=1),
                        QNetwork=QNetwork, verbose=False)
    assert len(seen) > 100 and set(seen) == {torch.float32}
    rb, cpu = results.replay_buffer, torch.device("cpu")
    assert rb.obs.dtype == rb.next_obs.dtype == np.float32
    obs, _, _, next_obs, _ = rb.sample(8, cpu)
    assert obs.dtype == next_obs.dtype == torch.float32
    seen.clear()
    dqn.select_action(results.q_network, np.zeros((2, 3)), 0.0, 2, np.random.default_rng(0), cpu)
    assert seen == [torch.float32]


# ---------------------------------------------------------------------------
# Random streams


def test_every_random_stream_has_its_own_seed():
    """Exploration, replay, network, each env and the evaluation episodes of runs 1 and 2:
    no two streams start from the same seed (env i and episode i take seed + i)."""
    streams = [s + i for run in (1, 2) for name, s in dqn.run_seeds(run).items()
               for i in (range(64) if name in ("envs", "eval") else [0])]
    assert len(set(streams)) == len(streams)
    assert dqn.run_seeds(1) == dqn.run_seeds(1)


def test_exploration_draws_nothing_like_an_env(tmp_path):
    """gymnasium seeds an env's generator as numpy's default_rng(seed) is: a stream seeded like
    an env would draw the env's numbers (the evaluation's exploration has its own seed)."""
    seeds = dqn.run_seeds(1)
    draws = []
    for seed, n in [(seeds["envs"], 2), (seeds["eval"], 1)]:  # training envs, evaluation episode 0
        envs = dqn.make_env(dqn.Args(env_id="tests/Chain-v0"), n)
        envs.reset(seed=seed)
        draws += [e.np_random.bit_generator.state for e in envs.unwrapped.envs]
        envs.close()
    ours = [np.random.default_rng(seeds[s]).bit_generator.state for s in ["explore", "replay", "eval_explore"]]
    assert len({str(d) for d in ours + draws}) == len(ours + draws)


# ---------------------------------------------------------------------------
# Tiny budgets and odd envs


@pytest.mark.parametrize("overrides", [dict(total_timesteps=4, learning_starts=0),
                                       dict(n_step=3, learning_starts=0, train_frequency=1),
                                       dict(exploration_fraction=0.0)])
def test_tiny_budgets_train_without_error(tmp_path, overrides):
    results = dqn.train(tiny(dqn, tmp_path, **overrides), verbose=False)
    assert results.args.total_timesteps == overrides.get("total_timesteps", 400)


def test_evaluation_of_a_looping_policy_ends_and_acts_with_eval_epsilon(tmp_path, capsys):
    """CliffWalking has no time limit; a policy that walks into the wall never ends an episode."""
    args = dqn.Args(env_id="CliffWalking-v1", eval_episodes=2, eval_max_steps=300)
    q_network = dqn.QNetwork(gym.spaces.Discrete(48), 4, dqn.Args(hidden_sizes=()))
    with torch.no_grad():  # always action 0: up, against the top wall
        q_network.mlp[-1].weight.zero_()
        q_network.mlp[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    returns = dqn.evaluate(q_network, args, torch.device("cpu"))
    assert returns == [-300.0, -300.0]
    assert "2 of 2 evaluation episodes were cut short at --eval-max-steps 300" in capsys.readouterr().out
    args.eval_epsilon = 1.0  # --eval-epsilon: every action random, off the wall (into the cliff)
    assert all(r != -300.0 for r in dqn.evaluate(q_network, args, torch.device("cpu")))


# ---------------------------------------------------------------------------
# A trained agent, evaluated again; train() as a library


@BOTH
def test_eval_only_reproduces_the_runs_evaluation(module, tmp_path, capsys):
    results = module.train(tiny(module, tmp_path), verbose=False)
    assert capsys.readouterr().out == ""  # verbose=False prints nothing
    args = module.Args(eval_only=results.output_dir, eval_episodes=3, device="cpu", torch_threads=1)
    again = dqn.evaluate_saved(args, module.make_env, module.QNetwork)
    assert again == results.eval_returns and len(again) == 3


def test_eval_only_takes_a_model_pt_with_flags_this_version_does_not_have(tmp_path):
    """A model.pt of an earlier version (its args had --watch and --tensorboard) still evaluates."""
    results = dqn.train(tiny(dqn, tmp_path), verbose=False)
    path = os.path.join(results.output_dir, "model.pt")
    saved = torch.load(path)
    torch.save({**saved, "args": {**saved["args"], "watch": False, "tensorboard": False}}, path)
    assert dqn.evaluate_saved(dqn.Args(eval_only=path, eval_episodes=3)) == results.eval_returns


@BOTH
def test_train_puts_back_the_torch_thread_count(module, tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        module.train(tiny(module, tmp_path, torch_threads=1, eval_episodes=0), verbose=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_model_is_saved_before_the_evaluation(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dqn, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dqn.train(tiny(dqn, tmp_path), verbose=False)
    (run_dir,) = os.listdir(tmp_path)
    assert "q_network" in torch.load(os.path.join(tmp_path, run_dir, "model.pt"))


def test_training_time_adds_up_over_a_resume_and_excludes_the_evaluation(tmp_path, monkeypatch):
    real, calls = dqn.linear_schedule, [0]

    def schedule(*args):  # a Ctrl-C in the 200th iteration, and a known time per iteration
        calls[0] += 1
        if calls[0] == 200:
            signal.raise_signal(signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(dqn, "linear_schedule", schedule)
    stopped = dqn.train(tiny(dqn, tmp_path, eval_episodes=0), verbose=False)
    checkpoint = torch.load(os.path.join(stopped.output_dir, "checkpoint.pt"), weights_only=True)
    first_segment = checkpoint["state"]["train_seconds"]
    monkeypatch.setattr(dqn, "evaluate", lambda *a, **k: __import__("time").sleep(1.0) or [])
    resumed = dqn.train(dqn.Args(resume=stopped.output_dir), verbose=False)
    with open(os.path.join(resumed.output_dir, "summary.json")) as f:
        train_seconds = json.load(f)["train_seconds"]
    assert first_segment > 0 and first_segment < train_seconds < first_segment + 1.0  # not the 1 s evaluation


# ---------------------------------------------------------------------------
# Bad input: one line on stderr, exit code 2, no traceback, nothing on disk (through the real
# command line; tests/test_dqn.py has more cases, through main())


def run_cli(script, tmp_path, *argv):
    proc = subprocess.run([sys.executable, os.path.join(REPO, script), *argv, "--output-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stderr


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    return dqn.train(tiny(dqn, out), verbose=False).output_dir


@pytest.mark.parametrize("argv, words", [
    (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "--device cuda"),
    (["--device", "nonsense"], "--device nonsense"),
    (["--buffer-size", "10000000000000"], "GB of memory"),
    (["--env-id", "ALE/Pong-v5"], "dqn_atari.py"),
    (["--env-id", "ale_py:ALE/Pong-v5"], "dqn_atari.py"),
    (["--resume", "MODEL"], "--eval-only"),
    (["--resume", "NOT_A_CHECKPOINT"], "not a checkpoint"),
    (["--eval-only", "NOT_A_CHECKPOINT"], "not a model.pt"),
    (["--eval-only", "OTHER_NETWORK"], "does not fit its settings"),
    (["--device", "meta"], "--device meta"),  # a device torch has, where nothing can run
    (["--eval-only", "TENSOR"], "not a model.pt"),  # (torch's warnings not shown)
    (["--eval-only", "PICKLE"], "not a model.pt"),
])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, trained_run, argv, words):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    other = torch.load(os.path.join(trained_run, "model.pt"))
    other["args"].update(env_id="CartPole-v1", hidden_sizes=(32,))  # another network than the weights'
    torch.save(other, tmp_path / "other.pt")
    files = {"MODEL": os.path.join(trained_run, "model.pt"), "NOT_A_CHECKPOINT": str(junk),
             "OTHER_NETWORK": str(tmp_path / "other.pt"), "TENSOR": str(tmp_path / "tensor.pt"),
             "PICKLE": str(tmp_path / "plain.pkl")}
    torch.save(torch.zeros(3), files["TENSOR"])
    with open(files["PICKLE"], "wb") as f:
        pickle.dump({"args": {}}, f, protocol=4)
    argv = [files.get(a, a) for a in argv]
    code, err = run_cli("dqn.py", tmp_path, *argv)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("script, argv, words", [
    ("dqn.py", ["--seed", "-1"], "--seed -1"),
    ("dqn.py", ["--total-timesteps", "500"], "--total-timesteps 500"),
    ("dqn.py", ["--tau", "0"], "--tau 0"),  # a target network that would never move
    ("dqn_atari.py", ["--frame-size", "20"], "--frame-size 20"),
    ("dqn_atari.py", ["--frame-stak", "2"], "--frame-stack"),
])
def test_bad_value_or_flag_is_tyros_message_and_leaves_nothing(tmp_path, script, argv, words):
    code, err = run_cli(script, tmp_path, *argv)
    assert code == 2 and words in err and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv, words", [
    (["--env-id", "CartPole-v1"], "use dqn.py"),
    (["--device", "nonsense"], "--device nonsense"),
    (["--buffer-size", "10000000000000"], "GB of memory"),
])
def test_atari_bad_input_is_one_line_and_leaves_nothing(tmp_path, argv, words):
    code, err = run_cli("dqn_atari.py", tmp_path, *argv)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "runs").exists()


def test_a_shared_file_runs_no_code_when_loaded(tmp_path):
    """torch.load(weights_only=True): a model.pt or checkpoint.pt that would run code when
    unpickled is refused, and the code never runs."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    evil = tmp_path / "model.pt"
    torch.save({"q_network": Evil(), "args": {}, "state": Evil(), "modules": {}}, evil)
    for flag in ["--eval-only", "--resume"]:
        code, err = run_cli("dqn.py", tmp_path, flag, str(evil))
        assert code == 2 and err.startswith("error: ") and not marker.exists(), err


USER_ENV = """
import gymnasium as gym
import numpy as np


class Corridor(gym.Env):
    \"\"\"Walk right to the end of a corridor of 5 cells: reward 1 there, -0.01 a step.\"\"\"

    def __init__(self, continuous=False):  # (no render_mode argument, as many users' envs)
        self.observation_space = gym.spaces.Box(0, 4, (1,), np.float32)
        self.action_space = (gym.spaces.Box(-1, 1, (1,)) if continuous else gym.spaces.Discrete(2))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = 0
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x = min(max(self.x + (1 if int(np.asarray(action).ravel()[0] > 0) else -1), 0), 4)
        return np.array([self.x], np.float32), 1.0 if self.x == 4 else -0.01, self.x == 4, False, {}


gym.register("Corridor-v0", entry_point=Corridor, max_episode_steps=50)  # a class, not a string
gym.register("CorridorContinuous-v0", entry_point=Corridor, kwargs={"continuous": True})
"""


def test_a_users_own_env_with_a_class_entry_point_trains_from_the_command_line(tmp_path):
    (tmp_path / "my_envs.py").write_text(USER_ENV)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    common = ["--total-timesteps", "3000", "--learning-starts", "500", "--eval-episodes", "3",
              "--output-dir", str(tmp_path / "runs")]
    out = subprocess.run([sys.executable, os.path.join(REPO, "dqn.py"), "--env-id", "my_envs:Corridor-v0",
                          *common], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    (run_dir,) = os.listdir(tmp_path / "runs")
    with open(tmp_path / "runs" / run_dir / "summary.json") as f:
        assert json.load(f)["eval_returns"] == pytest.approx([0.97] * 3)  # 4 steps right
    out = subprocess.run([sys.executable, os.path.join(REPO, "dqn.py"), "--env-id",
                          "my_envs:CorridorContinuous-v0", *common], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "Discrete actions" in out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1


def test_a_shared_file_imports_no_module_it_names(tmp_path):
    """An env id module:Id imports the module: one named by a file is imported only when the
    command line names it too."""
    marker = tmp_path / "imported"
    (tmp_path / "side_effect.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    results = dqn.train(tiny(dqn, tmp_path), verbose=False)
    path = os.path.join(results.output_dir, "model.pt")
    saved = torch.load(path)
    torch.save({**saved, "args": {**saved["args"], "env_id": "side_effect:tests/Chain-v0"}}, path)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}/tests"}
    command = [sys.executable, os.path.join(REPO, "dqn.py"), "--eval-only", path]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 2 and "--env-id side_effect:tests/Chain-v0" in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and not marker.exists()
    out = subprocess.run([*command, "--env-id", "side_effect:tests/Chain-v0"], capture_output=True,
                         text=True, timeout=300, env=env)
    assert marker.exists()  # named on the command line: imported (the env is conftest's, not there)


def test_resume_refuses_a_finished_run_a_lone_checkpoint_and_one_that_does_not_fit(tmp_path):
    run_dir = dqn.train(tiny(dqn, tmp_path, checkpoint_every=200), verbose=False).output_dir
    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    (tmp_path / "lone").mkdir()
    (tmp_path / "lone" / "checkpoint.pt").write_bytes(open(checkpoint, "rb").read())
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "metrics.csv").write_text("")
    saved = torch.load(checkpoint)
    saved["args"]["hidden_sizes"] = (32,)  # another network than the weights'
    torch.save(saved, tmp_path / "other" / "checkpoint.pt")
    (tmp_path / "older").mkdir()  # an older version's: no mean Q, losses without it
    (tmp_path / "older" / "metrics.csv").write_text("")
    older = torch.load(checkpoint)
    del older["state"]["last_q"]
    older["state"]["recent_losses"] = [1.0, 2.0]
    torch.save(older, tmp_path / "older" / "checkpoint.pt")
    for path, words in [(run_dir, "that run has finished: see its summary.json"),
                        (tmp_path / "lone", "no metrics.csv beside it"),
                        (tmp_path / "other", "its state or networks do not fit"),
                        (tmp_path / "older", "made by another version of this program")]:
        before = sorted(os.listdir(run_dir)), open(os.path.join(run_dir, "metrics.csv")).read()
        with pytest.raises(dqn.UsageError, match=words):
            dqn.train(dqn.Args(resume=str(path)), verbose=False)
        assert (sorted(os.listdir(run_dir)), open(os.path.join(run_dir, "metrics.csv")).read()) == before
    assert os.listdir(tmp_path / "lone") == ["checkpoint.pt"]
    assert (tmp_path / "other" / "metrics.csv").read_text() == ""


def register_once(env_id, entry_point, **kwargs):
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=entry_point, max_episode_steps=20, kwargs=kwargs)


class SpacesEnv(gym.Env):
    """Random observations from any space, with any Discrete action space."""

    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        assert self.action_space.contains(action), action
        return self.observation_space.sample(), 1.0, False, False, {}


def test_envs_with_a_scalar_or_numbered_from_3_observation_train(tmp_path):
    register_once("tests/Scalar-v0", SpacesEnv, observation_space=gym.spaces.Box(-1, 1, ()),
                  action_space=gym.spaces.Discrete(2))
    register_once("tests/From3-v0", SpacesEnv, observation_space=gym.spaces.Discrete(5, start=3),
                  action_space=gym.spaces.Discrete(2))
    for env_id in ["tests/Scalar-v0", "tests/From3-v0"]:
        assert len(dqn.train(tiny(dqn, tmp_path, env_id=env_id), verbose=False).eval_returns) == 3


def test_actions_numbered_from_1_are_refused_in_both_files(tmp_path):
    register_once("tests/ActionsFrom1-v0", SpacesEnv, observation_space=gym.spaces.Box(-1, 1, (2,)),
                  action_space=gym.spaces.Discrete(3, start=1))
    register_once("tests/PixelsActionsFrom1-v0", SpacesEnv,
                  observation_space=gym.spaces.Box(0, 255, (4, 36, 36), np.uint8),
                  action_space=gym.spaces.Discrete(3, start=1))
    with pytest.raises(dqn.UsageError, match="needs them numbered from 0"):
        dqn.train(tiny(dqn, tmp_path, env_id="tests/ActionsFrom1-v0"), verbose=False)
    with pytest.raises(dqn.UsageError, match="needs them numbered from 0"):  # (dqn.py's check)
        dqn_atari.train(tiny(dqn_atari, tmp_path, env_id="tests/PixelsActionsFrom1-v0"), verbose=False)
    assert os.listdir(tmp_path) == []


def test_dqn_atari_takes_module_colon_id_for_a_users_env_and_for_ale(tmp_path, monkeypatch):
    (tmp_path / "my_pixels.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('MyPixels-v0', entry_point='conftest:ConstantEnv', max_episode_steps=5,\n"
        "             kwargs={'pixels': True})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    results = dqn_atari.train(tiny(dqn_atari, tmp_path, env_id="my_pixels:MyPixels-v0"), verbose=False)
    assert results.eval_returns == [5.0] * 3  # reward 1 a step, 5 steps
    envs = dqn_atari.make_env(dqn_atari.Args(env_id="ale_py:ALE/Pong-v5"), 1)
    assert envs.single_observation_space.shape == (4, 84, 84)  # ale-py's game, preprocessed
    envs.close()


def test_capture_video_of_an_env_that_cannot_render_fails_before_training(tmp_path):
    pytest.importorskip("moviepy")
    register_once("tests/NoRender-v0", SpacesEnv, observation_space=gym.spaces.Box(-1, 1, (2,)),
                  action_space=gym.spaces.Discrete(2))  # its __init__ takes no render_mode
    register_once("tests/HumanOnly-v0", HumanOnly)  # takes render_mode, draws no rgb_array
    for env_id in ["tests/NoRender-v0", "tests/HumanOnly-v0"]:
        with pytest.raises(dqn.UsageError, match=f"--capture-video: {env_id} cannot render"):
            dqn.train(tiny(dqn, tmp_path, env_id=env_id, capture_video=True), verbose=False)
    assert os.listdir(tmp_path) == []


class HumanOnly(SpacesEnv):
    metadata = {"render_modes": ["human"]}

    def __init__(self, render_mode=None):
        super().__init__(gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2))
        self.render_mode = render_mode

    def render(self):
        return None  # (drawn in a window)


def test_a_vector_env_that_resets_on_the_same_step_is_refused(tmp_path):
    """The buffer skips the step after an episode's end (NEXT_STEP autoreset); a vector env that
    resets on the same step would lose each final observation: refused, nothing written."""
    def same_step(num_envs, **kwargs):
        return gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * num_envs,
                                        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)

    if "tests/SameStep-v0" not in gym.registry:
        gym.register("tests/SameStep-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv",
                     vector_entry_point=same_step)
    with pytest.raises(dqn.UsageError, match="needs AutoresetMode.NEXT_STEP"):
        dqn.train(tiny(dqn, tmp_path, env_id="tests/SameStep-v0"), verbose=False)
    assert os.listdir(tmp_path) == []
