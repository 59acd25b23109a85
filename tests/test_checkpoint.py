"""Checkpoints, resume and fail-fast, the same in dqn.py and dqn_atari.py: each test names
the behaviour it protects, on tiny envs (tests/conftest.py) so that each runs in seconds."""

import copy
import csv
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import dqn
import dqn_atari

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(module, tmp_path, **overrides):
    """A run of a few hundred steps with several envs, on a toy env for each file."""
    if module is dqn:
        settings = dict(env_id="tests/Chain-v0", hidden_sizes=(16,), batch_size=16)
    else:
        settings = dict(env_id="tests/Square-v0", batch_size=8, train_frequency=2,
                        target_network_frequency=50, device="cpu")
    settings.update(total_timesteps=600, num_envs=3, learning_starts=100, buffer_size=1_000,
                    eval_episodes=2, output_dir=str(tmp_path), log_interval=150,
                    checkpoint_buffer=True)
    return module.Args(**{**settings, **overrides})


def interrupt_at_iteration(monkeypatch, module, n, sig=signal.SIGINT):
    """Send this process `sig` during the n-th loop iteration, as a Ctrl-C would (dqn_atari.py
    runs dqn.py's loop: the same hook for both)."""
    real, calls = dqn.linear_schedule, [0]

    def schedule(*args):
        calls[0] += 1
        if calls[0] == n:
            signal.raise_signal(sig)  # (os.kill would end the process on Windows)
        return real(*args)

    monkeypatch.setattr(dqn, "linear_schedule", schedule)


def read_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def metrics_rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return list(csv.reader(f))


@pytest.mark.parametrize("module", [dqn, dqn_atari], ids=["dqn", "dqn_atari"])
def test_resume_starts_from_what_the_checkpoint_saved(module, tmp_path, monkeypatch):
    """The networks, the optimizer, the step counter, the random streams, epsilon's position
    and the buffer (--checkpoint-buffer) go on from the checkpoint; only the episodes are new."""
    interrupt_at_iteration(monkeypatch, module, 90)  # mid-episode, after learning started
    stopped = module.train(tiny(module, tmp_path))
    assert stopped.stopped_by == signal.SIGINT and stopped.eval_returns == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back
    path = os.path.join(stopped.output_dir, "checkpoint.pt")
    saved = read_checkpoint(path)
    step = saved["state"]["global_step"]
    assert 100 < step < 600
    monkeypatch.undo()

    seen = {}  # what the resumed run holds at the first use of each part
    real_select, real_step, real_sync = dqn.select_action, dqn.gradient_step, dqn.update_target

    def select_action(q_network, obs, epsilon, n_actions, rng, device):
        if "q_network" not in seen:
            seen.update(q_network={k: v.clone() for k, v in q_network.state_dict().items()},
                        epsilon=epsilon, explore_rng=rng.bit_generator.state)
        return real_select(q_network, obs, epsilon, n_actions, rng, device)

    def first_target(target_network):
        seen.setdefault("target_network", {k: v.clone() for k, v in target_network.state_dict().items()})

    def gradient_step(q_network, target_network, optimizer, batch, args):
        first_target(target_network)
        seen.setdefault("optimizer", copy.deepcopy(optimizer.state_dict()))
        return real_step(q_network, target_network, optimizer, batch, args)

    def update_target(target_network, q_network, tau):
        first_target(target_network)
        real_sync(target_network, q_network, tau)

    monkeypatch.setattr(dqn, "select_action", select_action)
    monkeypatch.setattr(dqn, "gradient_step", gradient_step)
    monkeypatch.setattr(dqn, "update_target", update_target)
    resumed = module.train(module.Args(resume=path))

    assert resumed.output_dir == stopped.output_dir and resumed.stopped_by == 0
    for name in ["q_network", "target_network"]:
        for key, value in saved["modules"][name].items():
            assert torch.equal(seen[name][key], value), (name, key)
    assert seen["optimizer"]["state"][0]["step"] == saved["modules"]["optimizer"]["state"][0]["step"]
    for key, value in saved["modules"]["optimizer"]["state"][0].items():
        assert torch.equal(seen["optimizer"]["state"][0][key], value)
    assert seen["explore_rng"] == saved["state"]["explore_rng"]
    args = resumed.args
    decay = int(args.exploration_fraction * args.total_timesteps)
    assert seen["epsilon"] == dqn.linear_schedule(args.start_e, args.end_e, decay, step)
    assert resumed.episode_returns[:len(stopped.episode_returns)] == stopped.episode_returns
    assert min(resumed.episode_steps[len(stopped.episode_returns):]) > step
    # the buffer: what was stored before the checkpoint is still there, in its slots (the ring
    # does not wrap in this run), and the resumed run added to it
    rb, saved_rb = resumed.replay_buffer, saved["replay_buffer"]
    n = saved_rb["size"]
    assert saved_rb["pos"] == n and n < rb.size < len(rb.actions)
    for name in ["actions", "rewards", "terminated", "obs" if module is dqn else "frames"]:
        np.testing.assert_array_equal(getattr(rb, name)[:n], saved_rb[name].numpy()[:n])


def test_the_buffers_sampling_rng_goes_on_from_the_checkpoint(tmp_path, monkeypatch):
    interrupt_at_iteration(monkeypatch, dqn, 90)
    stopped = dqn.train(tiny(dqn, tmp_path))
    path = os.path.join(stopped.output_dir, "checkpoint.pt")
    saved = read_checkpoint(path)["replay_buffer"]
    monkeypatch.undo()
    states, real_sample = [], dqn.ReplayBuffer.sample

    def sample(self, batch_size, device):
        states.append(self.rng.bit_generator.state)
        return real_sample(self, batch_size, device)

    monkeypatch.setattr(dqn.ReplayBuffer, "sample", sample)
    dqn.train(dqn.Args(resume=path), verbose=False)
    assert states[0] == saved["rng"]


def test_resume_without_buffer_refills_it_before_learning(tmp_path, monkeypatch):
    interrupt_at_iteration(monkeypatch, dqn, 80)
    stopped = dqn.train(tiny(dqn, tmp_path, checkpoint_buffer=False))
    path = os.path.join(stopped.output_dir, "checkpoint.pt")
    state = read_checkpoint(path)
    step, last_loss = state["state"]["global_step"], state["state"]["last_loss"]
    assert state["replay_buffer"] is None

    resumed = dqn.train(dqn.Args(resume=path))
    assert 600 - step <= resumed.replay_buffer.size <= 602 - step  # only what came after
    rows = [(int(r[0]), r[6]) for r in metrics_rows(resumed.output_dir)[1:]]  # (step, loss)
    refill = [loss for s, loss in rows if step < s <= step + 100]  # learning_starts = 100
    assert refill and set(refill) == {f"{last_loss:.5f}"}  # no update while refilling
    assert any(s > step + 100 and loss != f"{last_loss:.5f}" for s, loss in rows)  # then learns


def test_checkpoint_survives_a_kill_during_the_next_write(tmp_path):
    # A child process dies halfway through writing its second checkpoint: os._exit, as abrupt
    # as a SIGKILL (no handler, no flush, no cleanup) and on every OS.
    script = f"""
import os, sys
sys.path[:0] = [{REPO!r}, {os.path.join(REPO, "tests")!r}]
import conftest, torch, dqn
real_save, saves = torch.save, []
def save(obj, f, *args, **kwargs):
    saves.append(obj)
    if len(saves) == 2:
        f.write(b"half a checkpoint")
        f.flush()
        os._exit(9)
    real_save(obj, f, *args, **kwargs)
torch.save = save
dqn.train(dqn.Args(env_id="tests/Chain-v0", hidden_sizes=(16,), batch_size=16, total_timesteps=600,
                   num_envs=3, learning_starts=100, buffer_size=1_000, eval_episodes=2,
                   log_interval=150, checkpoint_buffer=True, checkpoint_every=200,
                   output_dir={str(tmp_path / "killed")!r}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    (run_dir,) = [e.path for e in os.scandir(tmp_path / "killed")]
    assert os.path.exists(os.path.join(run_dir, "checkpoint.pt.tmp"))  # the broken write
    saved = read_checkpoint(os.path.join(run_dir, "checkpoint.pt"))["state"]
    assert 200 <= saved["global_step"] < 400  # the first checkpoint, whole
    killed_rows = metrics_rows(run_dir)
    assert len(killed_rows) - 1 > len(saved["episode_returns"])  # rows written after it

    resumed = dqn.train(dqn.Args(resume=run_dir))  # a run directory works too
    rows = metrics_rows(run_dir)
    n = len(saved["episode_returns"])
    # metrics.csv: the rows up to the checkpoint as they were, then the resumed run's, each
    # episode once: none lost, none written twice
    assert rows[:n + 1] == killed_rows[:n + 1]
    assert [int(r[2]) for r in rows[1:]] == list(range(1, len(resumed.episode_returns) + 1))
    assert [float(r[3]) for r in rows[1:]] == resumed.episode_returns
    assert [int(r[0]) for r in rows[1:]] == resumed.episode_steps


def test_nan_loss_stops_the_run_with_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    # Rewards turn NaN after 250 steps (a broken env); checkpoints every 100 steps.
    monkeypatch.setattr(sys, "argv", ["dqn.py", "--env-id", "tests/ChainNaN-v0", "--hidden-sizes", "16",
                                      "--total-timesteps", "2000", "--learning-starts", "100",
                                      "--checkpoint-every", "100", "--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        dqn.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1 and "Traceback" not in err
    step = int(re.search(r"the TD loss is nan at step (\d+)", err).group(1))
    assert step > 250
    path = re.search(r"last good checkpoint is (\S+)", err).group(1)
    state = read_checkpoint(path)
    assert state["state"]["global_step"] < step
    assert all(torch.isfinite(v).all() for v in state["modules"]["q_network"].values())


@pytest.mark.skipif(sys.platform == "win32", reason="Windows cannot send SIGTERM: send_signal "
                    "terminates the process there")
@pytest.mark.parametrize("script, env_id", [("dqn.py", "CartPole-v1"),
                                            ("dqn_atari.py", "BreakoutNoFrameskip-v4")])
def test_sigterm_writes_a_checkpoint_and_says_how_to_resume(tmp_path, script, env_id):
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, script), "--env-id", env_id,
                             "--total-timesteps", "1000000", "--log-interval", "200",
                             "--output-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait until training runs
        if line.startswith("step"):
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    path = re.search(rf"resume with: python {script} --resume (\S+)", out).group(1)
    state = read_checkpoint(path)
    assert state["args"]["env_id"] == env_id and state["state"]["global_step"] >= 200


def test_atari_resume_starts_new_games_in_the_buffer(tmp_path, monkeypatch):
    args = dqn_atari.Args(env_id="BreakoutNoFrameskip-v4", total_timesteps=700, learning_starts=300,
                          buffer_size=5_000, num_envs=2, eval_episodes=0, output_dir=str(tmp_path),
                          log_interval=10**9, device="cpu", checkpoint_buffer=True)
    interrupt_at_iteration(monkeypatch, dqn_atari, 200)
    stopped = dqn_atari.train(args)
    path = os.path.join(stopped.output_dir, "checkpoint.pt")
    state = read_checkpoint(path)
    assert state["replay_buffer"] is not None
    resume_slot = state["replay_buffer"]["pos"]
    resumed = dqn_atari.train(dqn_atari.Args(resume=path))
    assert resumed.replay_buffer.first[resume_slot].all()  # the new games start in the buffer
    assert resumed.episode_returns[:len(stopped.episode_returns)] == stopped.episode_returns


def test_an_atari_checkpoint_from_before_optimizer_resumes_with_the_adam_it_ran(tmp_path,
                                                                              monkeypatch):
    """Its settings have no optimizer: it ran Adam (the default then), not the paper's RMSProp
    (the default now). One whose settings name another optimizer than its state's is refused
    in one line, not with a traceback at the next step."""
    args = dqn_atari.Args(env_id="BreakoutNoFrameskip-v4", total_timesteps=500, learning_starts=100,
                          buffer_size=5_000, eval_episodes=0, output_dir=str(tmp_path),
                          log_interval=10**9, device="cpu", optimizer="adam", save_model=False)
    interrupt_at_iteration(monkeypatch, dqn_atari, 200)
    path = os.path.join(dqn_atari.train(args).output_dir, "checkpoint.pt")
    checkpoint = read_checkpoint(path)
    assert checkpoint["modules"]["optimizer"]["state"]  # Adam's moments
    checkpoint["args"]["optimizer"] = "rmsprop"
    torch.save(checkpoint, path)
    with pytest.raises(dqn.UsageError, match="do not fit"):
        dqn_atari.train(dqn_atari.Args(resume=path))
    del checkpoint["args"]["optimizer"]
    torch.save(checkpoint, path)
    resumed = dqn_atari.train(dqn_atari.Args(resume=path))
    assert resumed.args.optimizer == "adam" and resumed.args.total_timesteps == 500


def test_the_resume_command_printed_for_a_module_colon_id_env_resumes_it(tmp_path, monkeypatch, capsys):
    """load() imports no module a file names unless the command line names it too: the printed
    command names it."""
    (tmp_path / "my_chain.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('MyChain-v0', entry_point='conftest:ChainEnv', max_episode_steps=20)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    interrupt_at_iteration(monkeypatch, dqn, 90)
    dqn.train(tiny(dqn, tmp_path, env_id="my_chain:MyChain-v0"))
    command = re.search(r"resume with: python \S+ (.*)", capsys.readouterr().out).group(1)
    monkeypatch.undo()
    monkeypatch.syspath_prepend(str(tmp_path))
    resumed = dqn.train(dqn.parse_args(command.split()), verbose=False)
    assert resumed.args.env_id == "my_chain:MyChain-v0" and len(resumed.eval_returns) == 2
