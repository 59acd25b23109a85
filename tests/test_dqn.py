"""The spec of dqn.py: each test names the behaviour it protects."""

import copy
import csv
import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import dqn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def q_table_network(q_values):
    """A QNetwork over Discrete(n) observations whose Q(s, a) is exactly q_values[s][a]."""
    q_values = torch.tensor(q_values, dtype=torch.float32)
    net = dqn.QNetwork(gym.spaces.Discrete(q_values.shape[0]), q_values.shape[1], dqn.Args(hidden_sizes=()))
    with torch.no_grad():  # no hidden layer: Q = W @ one_hot(s) + b
        net.mlp[-1].weight.copy_(q_values.T)
        net.mlp[-1].bias.zero_()
    return net


# ---------------------------------------------------------------------------
# Pure functions against hand-computed numbers


def test_linear_schedule_decays_then_stays():
    assert dqn.linear_schedule(1.0, 0.05, 1000, 0) == 1.0
    assert dqn.linear_schedule(1.0, 0.05, 1000, 500) == pytest.approx(0.525)
    assert dqn.linear_schedule(1.0, 0.05, 1000, 1000) == pytest.approx(0.05)
    assert dqn.linear_schedule(1.0, 0.05, 1000, 5000) == pytest.approx(0.05)
    assert dqn.linear_schedule(1.0, 0.05, 0, 0) == 0.05  # no decay at all: no division by zero


def test_td_target_terminal_stops_bootstrap_truncated_does_not():
    target_net = q_table_network([[0.0, 0.0], [3.0, 5.0], [-1.0, -2.0]])
    rewards = torch.tensor([1.0, 1.0, 2.0])
    next_obs = torch.tensor([1, 1, 2])
    # transition 0: a time-limit truncation, stored as terminated = 0 -> bootstraps
    # transition 1: the same s' but terminated -> the target is the reward alone
    # transition 2: not terminated, max over negative Q-values is -1
    terminated = torch.tensor([0.0, 1.0, 0.0])
    y = dqn.td_target(target_net, target_net, rewards, next_obs, terminated, discount=0.9, double_q=False)
    assert y.tolist() == pytest.approx([1.0 + 0.9 * 5.0, 1.0, 2.0 + 0.9 * -1.0])


def test_double_q_target_takes_the_online_nets_action_valued_by_the_target_net():
    online = q_table_network([[0.0, 0.0], [1.0, 0.0]])  # in s' = 1 the online net prefers action 0
    target = q_table_network([[0.0, 0.0], [3.0, 5.0]])  # the target net values it 3 (and prefers 1)
    args = (torch.tensor([1.0]), torch.tensor([1]), torch.tensor([0.0]), 0.5)
    assert dqn.td_target(online, target, *args, double_q=True).item() == pytest.approx(1.0 + 0.5 * 3.0)
    assert dqn.td_target(online, target, *args, double_q=False).item() == pytest.approx(1.0 + 0.5 * 5.0)


def test_td_loss_uses_the_taken_action_and_the_target_network():
    online = q_table_network([[1.0, 2.0], [0.0, 0.0]])
    target = q_table_network([[0.0, 0.0], [4.0, 3.0]])
    batch = (torch.tensor([0, 0]), torch.tensor([1, 0]), torch.tensor([0.5, 0.0]),
             torch.tensor([1, 1]), torch.tensor([0.0, 1.0]))
    loss, q = dqn.td_loss(online, target, batch, discount=0.5, loss="huber", double_q=False)
    assert q.tolist() == [2.0, 1.0]  # Q(s=0, a=1), Q(s=0, a=0)
    # targets: 0.5 + 0.5 * max(4, 3) = 2.5 and 0.0 (terminated); errors -0.5 and 1.0
    errors = np.array([2.0 - 2.5, 1.0 - 0.0])
    expected = {"mse": np.mean(errors ** 2),
                "huber": np.mean(np.where(abs(errors) < 1, 0.5 * errors ** 2, abs(errors) - 0.5))}
    assert loss.item() == pytest.approx(expected["huber"])
    mse, _ = dqn.td_loss(online, target, batch, discount=0.5, loss="mse", double_q=False)
    assert mse.item() == pytest.approx(expected["mse"])
    loss.backward()
    assert target.mlp[-1].weight.grad is None  # no gradient flows into the target


def test_update_target_hard_copy_is_exact_and_polyak_mixes():
    online, target = q_table_network([[1.0, 2.0]]), q_table_network([[3.0, -2.0]])
    dqn.update_target(target, online, tau=0.25)
    assert target.mlp[-1].weight.flatten().tolist() == pytest.approx([0.25 * 1 + 0.75 * 3,
                                                                        0.25 * 2 + 0.75 * -2])
    dqn.update_target(target, online, tau=1.0)
    assert torch.equal(target.mlp[-1].weight, online.mlp[-1].weight)


def test_gradient_clipping_bounds_the_norm_of_every_gradient_adam_steps_with(tiny_args, monkeypatch):
    """--max-grad-norm: at every Adam step the gradient's global norm is at most the bound. The
    same run unclipped has larger norms, so a loop that ignored the flag fails here."""
    norms, adam_step = [], torch.optim.Adam.step

    def step(self):
        grads = [p.grad for group in self.param_groups for p in group["params"]]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return adam_step(self)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    dqn.train(tiny_args(max_grad_norm=0.5), verbose=False)
    clipped, norms[:] = list(norms), []
    dqn.train(tiny_args(), verbose=False)
    assert len(clipped) == len(norms) > 40
    assert max(clipped) <= 0.5 * (1 + 1e-5) and sorted(norms)[len(norms) // 2] > 0.5


def test_gradient_steps_is_the_number_of_updates_per_round(tiny_args, monkeypatch):
    """--gradient-steps k: k optimizer steps each time global_step passes a multiple of
    --train-frequency, so a run makes k times the updates, and half of them with rounds twice
    as far apart. A loop that ignored either flag fails here."""
    steps, adam_step = [], torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self: steps.append(1) or adam_step(self))
    counts = []
    rounds_twice_as_far = dict(train_frequency=2 * tiny_args().train_frequency)
    for flags in (dict(), dict(gradient_steps=3), rounds_twice_as_far):
        steps.clear()
        dqn.train(tiny_args(**flags), verbose=False)
        counts.append(len(steps))
    assert counts[0] > 40 and counts[1] == 3 * counts[0] and abs(2 * counts[2] - counts[0]) <= 2


def test_an_n_step_return_bootstraps_with_gamma_to_the_n():
    """R already sums n discounted rewards, so the value after them counts gamma ** n: with Q = 10
    everywhere, R = 1, n = 3 and gamma 0.9 the target is 1 + 0.729 * 10 = 8.29."""
    args = dqn.Args(n_step=3, gamma=0.9, loss="mse", hidden_sizes=(4,))
    q_network = dqn.QNetwork(gym.spaces.Box(-1, 1, (2,)), 2, args)
    with torch.no_grad():
        for p in q_network.parameters():
            p.zero_()
        q_network.mlp[-1].bias.fill_(10.0)
    target_network = copy.deepcopy(q_network)
    batch = (torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), torch.ones(1), torch.zeros(1, 2),
             torch.zeros(1))
    optimizer = torch.optim.SGD(q_network.parameters(), lr=0.0)
    loss, mean_q = dqn.gradient_step(q_network, target_network, optimizer, batch, args)
    assert mean_q == 10.0 and loss == pytest.approx((10.0 - 8.29) ** 2)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_the_target_network_changes_only_when_global_step_passes_a_multiple_of_its_frequency(
        tiny_args, monkeypatch, tau):
    """The target lags: a loop that synced it at every env step (with tau 1: no target network
    at all) fails here. 3 envs: global_step moves by up to 3, so a multiple can be passed
    without being hit."""
    target, seen = [], []  # the target network; (global_step, its weights) at each iteration
    real_step, real_schedule = dqn.gradient_step, dqn.linear_schedule

    def gradient_step(q_network, target_network, *rest):
        target[:] = [target_network]
        return real_step(q_network, target_network, *rest)

    def schedule(start, end, duration, t):
        if start == 1.0 and target:  # epsilon's, once an iteration, before the env step
            seen.append((t, torch.cat([p.flatten() for p in target[0].parameters()]).clone()))
        return real_schedule(start, end, duration, t)

    monkeypatch.setattr(dqn, "gradient_step", gradient_step)
    monkeypatch.setattr(dqn, "linear_schedule", schedule)
    dqn.train(tiny_args(num_envs=3, train_frequency=1, target_network_frequency=50, tau=tau,
                        total_timesteps=600, learning_rate=1e-3), verbose=False)
    changed = [not torch.equal(a, b) for (_, a), (_, b) in zip(seen, seen[1:])]
    passed = [t1 // 50 > t0 // 50 for (t0, _), (t1, _) in zip(seen, seen[1:])]
    assert changed == passed and sum(passed) >= 8


def test_select_action_is_greedy_at_epsilon_zero_and_batched():
    net = q_table_network([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    rng = np.random.default_rng(0)
    actions = dqn.select_action(net, np.array([0, 1, 2, 1]), 0.0, 3, rng, torch.device("cpu"))
    assert actions.tolist() == [1, 0, 2, 0]


def test_select_action_explores_uniformly_at_epsilon_one():
    net = q_table_network([[0.0, 1.0, 0.0]])
    rng = np.random.default_rng(0)
    actions = dqn.select_action(net, np.zeros(30_000, dtype=np.int64), 1.0, 3, rng, torch.device("cpu"))
    assert np.bincount(actions, minlength=3) / 30_000 == pytest.approx([1 / 3] * 3, abs=0.02)


# ---------------------------------------------------------------------------
# Network and replay buffer


def test_qnetwork_sizes_come_from_the_spaces():
    box = gym.spaces.Box(-1, 1, shape=(2, 3, 4), dtype=np.float32)  # any shape: flattened
    net = dqn.QNetwork(box, 5, dqn.Args(hidden_sizes=(8,)))
    assert net(torch.zeros(7, 2, 3, 4)).shape == (7, 5)
    onehot = dqn.QNetwork(gym.spaces.Discrete(16), 4, dqn.Args(hidden_sizes=(8,)))
    assert onehot(torch.tensor([0, 15])).shape == (2, 4)


def test_dueling_q_values_average_to_v_and_keep_the_centred_advantages():
    """--dueling: the last layer gives V(s) then A(s, .); Q = V + A - mean(A), so the mean of
    Q over the actions is V and Q minus its mean is the centred advantages."""
    torch.manual_seed(0)
    net = dqn.QNetwork(gym.spaces.Box(-1, 1, (3,)), 5, dqn.Args(hidden_sizes=(8,), dueling=True))
    assert net.mlp[-1].out_features == 6  # V(s), then one advantage per action
    obs = torch.randn(7, 3)
    q = net(obs)
    raw = net.mlp(obs)
    v, a = raw[:, 0], raw[:, 1:]
    assert q.shape == (7, 5)
    torch.testing.assert_close(q.mean(1), v)
    torch.testing.assert_close(q - q.mean(1, keepdim=True), a - a.mean(1, keepdim=True))
    assert not torch.allclose(q, a)  # (not the raw advantages: V is added, their mean taken off)


def test_without_dueling_the_network_is_the_plain_mlp_it_was():
    """--no-dueling (the default): the same layers, shapes and initial weights as an MLP with
    n_actions outputs, and Q is its output."""
    args = dqn.Args(hidden_sizes=(8,))
    assert args.dueling is False
    torch.manual_seed(0)
    net = dqn.QNetwork(gym.spaces.Box(-1, 1, (3,)), 5, args)
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5))
    assert [(k, v.shape) for k, v in net.state_dict().items()] == \
        [("mlp." + k, v.shape) for k, v in plain.state_dict().items()]
    assert [tuple(p.shape) for p in net.parameters()] == [(8, 3), (8,), (5, 8), (5,)]
    for p, p_plain in zip(net.parameters(), plain.parameters()):
        assert torch.equal(p, p_plain)
    obs = torch.randn(4, 3)
    assert torch.equal(net(obs), plain(obs))


@pytest.mark.parametrize("adam_eps", [1e-8, 1.5e-4])
def test_adam_eps_is_the_optimizers_epsilon(tiny_args, adam_eps):
    """The optimizer that train() steps (as saved in its checkpoint) has eps = --adam-eps."""
    results = dqn.train(tiny_args(adam_eps=adam_eps, checkpoint_every=200), verbose=False)
    checkpoint = torch.load(os.path.join(results.output_dir, "checkpoint.pt"), weights_only=True)
    optimizer = checkpoint["modules"]["optimizer"]
    assert optimizer["state"]  # it took steps
    assert [g["eps"] for g in optimizer["param_groups"]] == [adam_eps]


def test_buffer_wraps_without_losing_order():
    space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
    rb = dqn.ReplayBuffer(space, dqn.Args(buffer_size=5, batch_size=5), seed=0)
    for i in range(7):  # 7 transitions
        rb.store(np.array([i, i]), i, i * 10.0, np.array([i + 1, i + 1]), i % 2)
    assert rb.size == 5 and rb.pos == 2
    # slots 0, 1 were overwritten by transitions 5, 6; slots 2-4 still hold 2-4
    assert rb.actions.tolist() == [5, 6, 2, 3, 4]
    assert rb.rewards.tolist() == [50.0, 60.0, 20.0, 30.0, 40.0]
    assert rb.obs[:, 0].tolist() == [5, 6, 2, 3, 4]
    assert (rb.next_obs[:, 0] == rb.obs[:, 0] + 1).all()
    assert rb.terminated.tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]


def test_buffer_samples_uniformly_from_what_is_stored_only():
    space = gym.spaces.Discrete(100)
    rb = dqn.ReplayBuffer(space, dqn.Args(buffer_size=100, batch_size=1), seed=0)
    for i in range(10):
        rb.store(i, i, 0.0, i, 0.0)
    obs, actions, rewards, next_obs, terminated = rb.sample(50_000, torch.device("cpu"))
    assert obs.dtype == torch.int64 and rewards.dtype == torch.float32
    counts = np.bincount(actions.numpy(), minlength=100)
    assert counts[10:].sum() == 0  # never an empty slot
    assert counts[:10] / 50_000 == pytest.approx([0.1] * 10, abs=0.01)
    assert torch.equal(obs, actions)  # the fields of one sample stay aligned


# ---------------------------------------------------------------------------
# Transitions collected by train(): alignment, truncation, autoreset


def make_env_of_yours(args, num_envs, evaluation=False):
    """A make_env of a user's own: gymnasium's vector env, without RecordEpisodeStatistics."""
    return gym.make_vec(args.env_id, num_envs, vectorization_mode="sync")


@pytest.mark.parametrize("make_env", [dqn.make_env, make_env_of_yours], ids=["ours", "yours"])
@pytest.mark.parametrize("num_envs", [1, 3])
def test_transitions_are_exact(tiny_args, num_envs, make_env):
    """Also with a make_env of yours: train() learns which steps were resets without relying on
    that make_env to add RecordEpisodeStatistics."""
    results = dqn.train(tiny_args(num_envs=num_envs), make_env=make_env)
    rb = results.replay_buffer
    obs, next_obs = rb.obs[:rb.size], rb.next_obs[:rb.size]
    ep_id, t, length = obs.T
    next_id, next_t, next_length = next_obs.T
    # s' follows s in the same episode: no transition from a final obs to a reset obs
    # (the autoreset step of a vector env) was ever stored
    assert (next_id == ep_id).all() and (next_t == t + 1).all()
    # the reward and the action are the ones taken in s (reward = 10 * t + action)
    assert (rb.rewards[:rb.size] == 10 * t + rb.actions[:rb.size]).all()
    # terminated exactly when the episode really ended
    assert (rb.terminated[:rb.size] == (next_t == next_length)).all()
    # time-limit truncations: stored as not terminated, s' is the true final observation
    truncated = (next_t == dqn_chain_max_steps()) & (next_length > next_t)
    assert truncated.sum() > 5 and (rb.terminated[:rb.size][truncated] == 0).all()
    assert rb.terminated[:rb.size].sum() > 5
    # every env step was stored once: episode starts equal episodes
    n_steps = rb.size
    assert n_steps >= 300 and (t == 0).sum() >= len(results.episode_returns)


N_STEP_ARGS = dqn.Args(buffer_size=10, batch_size=1, n_step=3, gamma=0.5)


def test_n_step_transitions_sum_discounted_rewards_and_stop_at_the_episode_end():
    """One env, n = 3, gamma = 0.5; rewards 1, 2, 4, 8 on the steps out of o0 .. o3."""
    def run(last_terminated, last_truncated):
        rb = dqn.ReplayBuffer(gym.spaces.Box(0, 9, (1,)), N_STEP_ARGS, seed=0)
        for t, r in enumerate([1.0, 2.0, 4.0, 8.0]):
            end = t == 3
            rb.add(np.array([[t]]), np.array([t]), np.array([r]), np.array([[t + 1]]),
                   np.array([end and last_terminated]), np.array([end and last_truncated]),
                   reset=np.array([False]))
        return [(int(o[0]), int(a), float(ret), int(o2[0]), bool(term)) for o, a, ret, o2, term in
                zip(rb.obs[:rb.size], rb.actions, rb.rewards, rb.next_obs, rb.terminated)]

    # (s_t, a_t, r_t + 0.5 r_t+1 + 0.25 r_t+2, s_t+3, terminated); at the end, the last
    # steps are stored with the rewards up to it and nothing to bootstrap
    assert run(True, False) == [(0, 0, 3.0, 3, False), (1, 1, 6.0, 4, True), (2, 2, 8.0, 4, True),
                                (3, 3, 8.0, 4, True)]
    # truncated: the full 3-step transition reaching the final obs bootstraps from it;
    # the shorter ones after it are dropped
    assert run(False, True) == [(0, 0, 3.0, 3, False), (1, 1, 6.0, 4, False)]
    # a reset step is no transition and leaves the window alone
    rb = dqn.ReplayBuffer(gym.spaces.Box(0, 9, (1,)), N_STEP_ARGS, seed=0)
    rb.windows[0].append(("o", 0, 1.0))
    rb.add(np.zeros((1, 1)), np.zeros(1, int), np.zeros(1), np.zeros((1, 1)), np.zeros(1, bool),
           np.zeros(1, bool), reset=np.array([True]))
    assert rb.size == 0 and len(rb.windows[0]) == 1


def test_n_step_transitions_collected_by_train_are_exact(tiny_args):
    n = 3
    rb = dqn.train(tiny_args(num_envs=3, n_step=n, gamma=1.0)).replay_buffer
    (ep_id, t, length), (next_id, next_t, next_length) = rb.obs[:rb.size].T, rb.next_obs[:rb.size].T
    terminated, rewards = rb.terminated[:rb.size].astype(bool), rb.rewards[:rb.size]
    assert (next_id == ep_id).all()  # never across episodes (nor the autoreset step)
    steps = next_t - t
    assert (steps[~terminated] == n).all()  # bootstrapped from n steps later ...
    assert ((steps[terminated] >= 1) & (steps[terminated] <= n) & (next_t == length)[terminated]).all()
    # ... with the rewards of the steps in between (10 * t + action, action in 0..2)
    base = np.array([sum(10 * (t0 + k) for k in range(int(m))) for t0, m in zip(t, steps)])
    assert ((rewards >= base) & (rewards <= base + 2 * steps)).all()
    # episodes that terminated stored a transition from each of their states; truncated
    # ones (at 6 steps) from states 0..2 only, the last reaching the true final obs
    max_steps = dqn_chain_max_steps()
    for episode in np.unique(ep_id):
        mine = ep_id == episode
        if terminated[mine].any():
            assert sorted(t[mine]) == list(range(int(length[mine][0])))
        elif (next_t[mine] == max_steps).any():
            assert sorted(t[mine]) == list(range(max_steps - n + 1)) and (length[mine] > max_steps).all()


def dqn_chain_max_steps():
    from conftest import ChainEnv
    return ChainEnv.MAX_STEPS


def test_episode_returns_are_whole_episodes(tiny_args):
    results = dqn.train(tiny_args(num_envs=2))
    # a Chain episode of n steps earns sum(10 * t + a_t) for t < n; each return must
    # therefore lie between the all-zero-action and all-two-action sums of some n <= 6
    possible = [(sum(10 * t for t in range(n)), sum(10 * t + 2 for t in range(n))) for n in range(2, 7)]
    for ret in results.episode_returns:
        assert any(lo <= ret <= hi for lo, hi in possible), ret


# ---------------------------------------------------------------------------
# Reproducibility, outputs, learning


def test_same_seed_same_run_different_seed_different_run(tmp_path):
    def run(seed):
        args = dqn.preset_args("CartPole-v1", seed=seed, total_timesteps=3_000, learning_starts=500,
                               eval_episodes=2, output_dir=str(tmp_path), log_interval=100_000)
        return dqn.train(args)

    a, b, c = run(1), run(1), run(2)
    assert a.episode_returns == b.episode_returns and a.eval_returns == b.eval_returns
    for pa, pb in zip(a.q_network.parameters(), b.q_network.parameters()):
        assert torch.equal(pa, pb)
    assert a.episode_returns != c.episode_returns


def test_run_writes_metrics_summary_and_model(tiny_args):
    results = dqn.train(tiny_args(eval_episodes=3))
    with open(os.path.join(results.output_dir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [float(r["return"]) for r in rows] == results.episode_returns
    assert [int(r["step"]) for r in rows] == results.episode_steps
    with open(os.path.join(results.output_dir, "summary.json")) as f:
        assert json.load(f)["eval_returns"] == results.eval_returns
    saved = torch.load(os.path.join(results.output_dir, "model.pt"))
    assert saved["args"]["env_id"] == "tests/Chain-v0"
    net = dqn.QNetwork(gym.spaces.Box(0, 1e6, shape=(3,)), 3, dqn.Args(**saved["args"]))
    net.load_state_dict(saved["q_network"])
    assert len(results.eval_returns) == 3


def test_discrete_observations_are_one_hot(tmp_path):
    args = dqn.Args(env_id="FrozenLake-v1", total_timesteps=500, learning_starts=100,
                    eval_episodes=1, output_dir=str(tmp_path), log_interval=100_000)
    results = dqn.train(args)
    assert results.q_network.n_obs_values == 16


def test_capture_video_records_each_evaluation_episode(tmp_path):
    pytest.importorskip("moviepy", reason="--capture-video needs moviepy (optional; .ci/run installs it)")
    args = dqn.Args(env_id="CartPole-v1", total_timesteps=300, num_envs=1, learning_starts=100,
                    eval_episodes=2, capture_video=True, output_dir=str(tmp_path), log_interval=10**6)
    video_dir = os.path.join(dqn.train(args).output_dir, "videos")
    videos = sorted(f for f in os.listdir(video_dir) if f.endswith(".mp4"))
    assert len(videos) == 2 and all(os.path.getsize(os.path.join(video_dir, f)) > 1000 for f in videos)


def test_import_has_no_side_effects(tmp_path):
    out = subprocess.run([sys.executable, "-c", "import dqn"], cwd=tmp_path, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == 0 and out.stdout == "" and out.stderr == ""
    assert os.listdir(tmp_path) == []


def test_learns_cartpole(tmp_path):
    """The default CartPole run: the greedy policy balances the pole for the whole episode."""
    results = dqn.train(dqn.preset_args("CartPole-v1", seed=1, output_dir=str(tmp_path)))
    assert np.mean(results.eval_returns) >= 475
    assert np.mean(results.episode_returns[-20:]) >= 400


# ---------------------------------------------------------------------------
# Bad input: a short message, a non-zero exit, no traceback, nothing on disk


def run_main(monkeypatch, capsys, *argv):
    monkeypatch.setattr(sys, "argv", ["dqn.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        dqn.main()
    err = capsys.readouterr().err
    return exit_info.value.code, err


@pytest.mark.parametrize("argv, words", [
    (["--env-id", "Pendulum-v1"], "Discrete actions"),
    (["--env-id", "NoSuchEnv-v0"], "NoSuchEnv"),
    (["--env-id", "no_such_module:MyEnv-v0"], "no_such_module"),
    (["--env-id", "Blackjack-v1"], "Box or Discrete observations"),
    (["--resume", "/nonexistent/checkpoint.pt"], "--resume /nonexistent/checkpoint.pt: No such file"),
])
def test_bad_input_is_one_line_and_exit_code_2(monkeypatch, capsys, tmp_path, argv, words):
    code, err = run_main(monkeypatch, capsys, *argv, "--output-dir", str(tmp_path))
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []  # nothing written for a run that never started


@pytest.mark.parametrize("argv, words", [
    (["--batch-size", "64", "--buffer-size", "32"], "--buffer-size 32"),
    (["--total-timesteps", "1000", "--learning-starts", "5000"], "--learning-starts 5000"),
    (["--loss", "foo"], "foo"),
    (["--total-timesteps", "abc"], "--total-timesteps"),
    (["--gamma", "1.5"], "--gamma 1.5"),
    (["--tau", "1.5"], "--tau 1.5"),
    (["--checkpoint-every", "-1"], "--checkpoint-every -1"),
    (["--hidden-sizes", "64", "0"], "--hidden-sizes (64, 0)"),
    (["--learning-rat", "0.1"], "--learning-rate"),  # tyro suggests the nearest flag
])
def test_bad_flag_or_value_is_reported_by_tyro_with_exit_code_2(monkeypatch, capsys, tmp_path, argv, words):
    code, err = run_main(monkeypatch, capsys, *argv, "--output-dir", str(tmp_path))
    assert code == 2 and words in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_a_python_caller_gets_a_value_error_for_a_value_out_of_range():
    with pytest.raises(ValueError, match="--gamma 1.5 is out of range"):
        dqn.Args(gamma=1.5)
    with pytest.raises(ValueError, match="--buffer-size 8"):
        dqn.preset_args("CartPole-v1", buffer_size=8)


def test_unwritable_output_dir_fails_at_once(monkeypatch, capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, err = run_main(monkeypatch, capsys, "--output-dir", str(blocker / "runs"))
    assert code == 2 and "output directory" in err and err.count("\n") == 1


def test_missing_optional_package_says_what_to_install(monkeypatch, capsys, tmp_path):
    import importlib.util
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "moviepy" else real_find_spec(name, *a))
    code, err = run_main(monkeypatch, capsys, "--capture-video", "--output-dir", str(tmp_path))
    assert code == 2 and "pip install moviepy" in err and os.listdir(tmp_path) == []


def test_preset_switches_are_flags_that_override_the_preset():
    parse = lambda *argv: dqn.parse_args(["--env-id", "CartPole-v1", *argv])  # noqa: E731
    assert parse().n_step == 10 and parse().loss == "mse"  # CartPole's preset
    assert parse("--n-step", "1").n_step == 1 and parse("--loss", "huber").loss == "huber"
    assert parse("--double-q").double_q is True and parse("--no-double-q").double_q is False
    assert dqn.parse_args(["--env-id=Acrobot-v1", "--seed", "3"]) == dqn.preset_args("Acrobot-v1", seed=3)
    assert dqn.parse_args([]) == dqn.preset_args("CartPole-v1")  # the default env's preset
    assert dqn.parse_args(["--env-id", "FrozenLake-v1"]) == dqn.Args(env_id="FrozenLake-v1")  # no preset


def test_help_shows_the_values_of_the_env_given():
    out = subprocess.run([sys.executable, os.path.join(REPO, "dqn.py"), "--env-id", "MountainCar-v0", "--help"],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0 and "None" not in out.stdout
    assert "(default: 256 256)" in out.stdout and "(default: 0.004)" in out.stdout  # MountainCar's
    assert "{huber,mse}" in out.stdout


def test_cli_bad_input_has_no_traceback(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(REPO, "dqn.py"), "--env-id", "Pendulum-v1",
                          "--output-dir", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("error:") and out.stderr.count("\n") == 1
