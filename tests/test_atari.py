"""The spec of dqn_atari.py: each test names the behaviour it protects."""

import collections
import dataclasses
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import dqn
import dqn_atari

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def atari_args(tmp_path, **overrides):
    settings = dict(env_id="BreakoutNoFrameskip-v4", total_timesteps=700, learning_starts=600,
                    buffer_size=5_000, start_e=1.0, end_e=1.0, eval_episodes=0,
                    output_dir=str(tmp_path), log_interval=10**9, device="cpu")
    return dqn_atari.Args(**{**settings, **overrides})


# ---------------------------------------------------------------------------
# Environment and preprocessing (real ROM)


def test_preprocessed_observation_is_a_stack_of_84x84_uint8_frames():
    envs = dqn_atari.make_env(dqn_atari.Args(), 2)
    obs, info = envs.reset(seed=0)
    assert envs.single_observation_space.shape == (4, 84, 84)
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    assert envs.single_action_space.n == 4 and (info["lives"] == 5).all()
    envs.close()


def test_stack_is_zero_padded_at_reset_and_shifts_one_frame_per_step():
    envs = dqn_atari.make_env(dqn_atari.Args(), 1)
    obs, _ = envs.reset(seed=0)
    assert not obs[0, :3].any() and obs[0, 3].any()  # [0, 0, 0, first frame]
    for action in [1, 2, 3, 0, 2]:
        next_obs, *_ = envs.step(np.array([action]))
        np.testing.assert_array_equal(next_obs[0, :3], obs[0, 1:])
        assert next_obs[0, 3].any()
        obs = next_obs
    envs.close()


def test_v5_and_noframeskip_ids_get_the_same_preprocessing():
    """ALE/Breakout-v5's built-in frame skip 4 and sticky actions 0.25 must not stack on ours."""
    rollouts = []
    for env_id in ["BreakoutNoFrameskip-v4", "ALE/Breakout-v5"]:
        envs = dqn_atari.make_env(dqn_atari.Args(env_id=env_id), 1)
        frames = [envs.reset(seed=3)[0]]
        rng = np.random.default_rng(0)
        frames += [envs.step(rng.integers(0, 4, size=1))[0] for _ in range(100)]
        rollouts.append(np.stack(frames))
        envs.close()
    np.testing.assert_array_equal(rollouts[0], rollouts[1])


def test_sticky_actions_are_off_by_default_and_on_by_flag():
    def rollout(**overrides):
        envs = dqn_atari.make_env(dqn_atari.Args(**overrides), 1)
        frames, rng = [envs.reset(seed=3)[0]], np.random.default_rng(0)
        frames += [envs.step(rng.integers(0, 4, size=1))[0] for _ in range(100)]
        envs.close()
        return np.stack(frames)

    np.testing.assert_array_equal(rollout(), rollout(repeat_action_probability=0.0))
    assert not np.array_equal(rollout(), rollout(repeat_action_probability=0.25))


def test_each_preprocessing_flag_reaches_the_env():
    """A flag that make_env dropped on its way to ale-py would pass every other test. Each one,
    set off its default, changes the frames of the same seeded random play; --no-clip-rewards
    gives the learner Space Invaders' real points (5 to 30 an alien), and clipping their sign."""
    def rollout(env_id="BreakoutNoFrameskip-v4", **overrides):
        envs = dqn_atari.make_env(dqn_atari.Args(env_id=env_id, **overrides), 1)
        frames, rewards, rng = [envs.reset(seed=3)[0]], set(), np.random.default_rng(0)
        for _ in range(150):
            obs, reward, *_ = envs.step(rng.integers(0, envs.single_action_space.n, size=1))
            frames.append(obs)
            rewards.add(float(reward[0]))
        envs.close()
        return np.stack(frames), rewards

    default, _ = rollout()
    changed = dict(noop_max=0, frame_skip=2, fire_reset=False, frame_size=64, frame_stack=2,
                   max_episode_frames=200)  # (200 frames: the game is cut after 50 steps)
    for flag, value in changed.items():
        assert not np.array_equal(rollout(**{flag: value})[0], default), flag
    assert rollout("SpaceInvadersNoFrameskip-v4")[1] == {0.0, 1.0}
    assert max(rollout("SpaceInvadersNoFrameskip-v4", clip_rewards=False)[1]) >= 5


@pytest.mark.parametrize("episodic_life", [True, False])
def test_lost_life_is_terminal_for_learning_only_and_returns_are_whole_games(tmp_path, episodic_life):
    """Smoke run on a real ROM, random play: a Breakout game has 5 lives."""
    results = dqn_atari.train(atari_args(tmp_path, total_timesteps=900, learning_starts=800,
                                         episodic_life=episodic_life, eval_episodes=1))
    rb, games = results.replay_buffer, len(results.episode_returns)
    assert games >= 2  # random Breakout games last ~200 steps
    assert rb.size - rb.first[:rb.size].sum() == 900  # every env step but the resets is a transition
    terminals = int(rb.terminated.sum())
    if episodic_life:  # each finished game lost 5 lives, the unfinished one fewer
        assert 5 * games <= terminals < 5 * (games + 1)
    else:
        assert terminals == games
    assert all(r >= 0 for r in results.episode_returns) and len(results.eval_returns) == 1
    assert results.losses == [] or all(np.isfinite(loss) for _, loss in results.losses)
    assert os.path.exists(os.path.join(results.output_dir, "model.pt"))


class LivesEnv(gym.Env):
    """A game of 3 lives, its newest frame filled with the step count t: a life is lost at t = 4
    and 8, the game is over at t = 12 (terminated). Registered twice: with a time limit of 10
    steps, which cuts every game after its two lost lives, and of 20, which lets it end."""
    observation_space = gym.spaces.Box(0, 255, (4, 36, 36), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.frames = 0, collections.deque([np.zeros((36, 36), np.uint8)] * 4, maxlen=4)
        return np.stack(self.frames), {"lives": 3}

    def step(self, action):
        self.t += 1
        self.frames.append(np.full((36, 36), self.t, np.uint8))
        lives = 3 - (self.t >= 4) - (self.t >= 8) - (self.t >= 12)
        return np.stack(self.frames), 1.0, self.t == 12, False, {"lives": lives}


for steps in (10, 20):
    gym.register(f"tests/Lives{steps}-v0", entry_point=LivesEnv, max_episode_steps=steps)


@pytest.mark.parametrize("time_limit", [10, 20])
def test_a_lost_life_is_terminal_for_learning_and_a_time_limit_is_not(tmp_path, time_limit):
    """What the buffer learns from: terminal at each lost life and at the game's end, never at the
    time limit that cuts a game (CleanRL #460); a lost life is no reset: the game goes on."""
    results = dqn_atari.train(atari_args(tmp_path, env_id=f"tests/Lives{time_limit}-v0",
                                         num_envs=2, total_timesteps=300, learning_starts=200,
                                         batch_size=8, buffer_size=1_000))
    rb = results.replay_buffer
    t = rb.frames[:rb.size, :, 0, 0]  # the step count of the frame each slot holds
    first, terminated = rb.first[:rb.size], rb.terminated[:rb.size] == 1
    assert (t[first] == 0).all() and (t[~first] > 0).all()  # only a game's start is a reset
    assert (terminated == (~first & np.isin(t, [4, 8, 12]))).all()
    assert t.max() == min(time_limit, 12)  # the time limit cuts each game at 10, or it ends
    assert len(results.episode_returns) >= 20  # whole games: lost lives end none
    assert set(results.episode_returns) == {float(min(time_limit, 12))}


# ---------------------------------------------------------------------------
# Replay buffer


class StackReference:
    """The slow obvious replay: every real transition as whole (stack, a, r, next_stack, term)."""

    def __init__(self, num_envs, stack, frame_shape):
        self.stacks = [None] * num_envs
        self.stack, self.frame_shape = stack, frame_shape
        self.transitions = {}  # reward (a unique id) -> (env, step, obs, action, next_obs, terminated)

    def reset(self, env, frame):
        self.stacks[env] = [np.zeros(self.frame_shape, np.uint8)] * (self.stack - 1) + [frame]

    def step(self, env, step, action, reward, frame, terminated):
        obs = np.stack(self.stacks[env])
        self.stacks[env] = self.stacks[env][1:] + [frame]
        self.transitions[float(reward)] = (env, step, obs, action, np.stack(self.stacks[env]), terminated)


def buffer_args(buffer_size, num_envs, **overrides):
    return dqn_atari.Args(buffer_size=buffer_size, batch_size=1, num_envs=num_envs, device="cpu",
                          **overrides)


def drive_synthetic(rb, reference, num_envs, steps, rng):
    """Feeds rb the way train() does, from frames that spell out (env, step): episodes of
    random lengths ending in a termination or a truncation, NEXT_STEP autoresets."""
    def frame(env, step):
        return np.array([[env + 1, step % 250 + 1], [step // 250 % 250 + 1, 7]], np.uint8)

    frames = np.stack([frame(e, 0) for e in range(num_envs)])
    for e in range(num_envs):
        reference.reset(e, frames[e])
    rb.store(frames, np.zeros(num_envs), np.zeros(num_envs), np.zeros(num_envs), np.ones(num_envs, bool))
    autoreset = np.zeros(num_envs, bool)
    remaining = rng.integers(1, 12, size=num_envs)
    next_id = 1
    for step in range(1, steps):
        frames = np.stack([frame(e, step) for e in range(num_envs)])
        actions = rng.integers(0, 5, size=num_envs)
        rewards = np.zeros(num_envs, np.float32)
        terminated, truncated = np.zeros(num_envs, bool), np.zeros(num_envs, bool)
        for e in range(num_envs):
            if autoreset[e]:
                reference.reset(e, frames[e])
                remaining[e] = rng.integers(1, 12)
                continue
            rewards[e], next_id = next_id, next_id + 1
            remaining[e] -= 1
            if remaining[e] == 0:
                terminated[e] = rng.random() < 0.5
                truncated[e] = not terminated[e]
            reference.step(e, step, actions[e], rewards[e], frames[e], terminated[e])
        rb.store(frames, actions, rewards, terminated, first=autoreset)
        autoreset = terminated | truncated


@pytest.mark.parametrize("num_envs", [1, 3])
def test_buffer_matches_reference_over_many_episodes_with_wraparound(num_envs):
    rng = np.random.default_rng(num_envs)
    space = gym.spaces.Box(0, 255, (4, 2, 2), np.uint8)
    slots = 37  # per env: the ring wraps many times in 1000 steps
    rb = dqn_atari.ReplayBuffer(space, buffer_args(slots * num_envs, num_envs), seed=0)
    reference = StackReference(num_envs, 4, (2, 2))
    steps = 1000
    drive_synthetic(rb, reference, num_envs, steps, rng)

    # The buffer holds each env's last `slots` steps (resets included); the `stack`
    # oldest lack the frames of their first stack, so they are never sampled.
    expected = {r for r, (_, step, *_) in reference.transitions.items() if step >= steps - slots + 4}
    seen = set()
    for _ in range(200):
        obs, actions, rewards, next_obs, terminated = rb.sample(64, torch.device("cpu"))
        for i, r in enumerate(rewards.tolist()):
            _, _, ref_obs, ref_action, ref_next, ref_term = reference.transitions[r]
            np.testing.assert_array_equal(obs[i].numpy(), ref_obs)
            np.testing.assert_array_equal(next_obs[i].numpy(), ref_next)
            assert actions[i].item() == ref_action and terminated[i].item() == ref_term
            seen.add(r)
    assert seen == expected


class EpisodeReference(StackReference):
    """StackReference that also keeps each env's steps in order, None marking a reset."""

    def __init__(self, num_envs, stack, frame_shape):
        super().__init__(num_envs, stack, frame_shape)
        self.sequence = [[] for _ in range(num_envs)]

    def reset(self, env, frame):
        super().reset(env, frame)
        self.sequence[env].append(None)

    def step(self, env, step, action, reward, frame, terminated):
        obs = np.stack(self.stacks[env])
        super().step(env, step, action, reward, frame, terminated)
        self.sequence[env].append((obs, action, reward, np.stack(self.stacks[env]), terminated))

    def n_step(self, n, gamma):
        """obs bytes -> (action, discounted reward sum, next_obs, terminated) of every n-step
        transition: n steps of one episode, or fewer that end in a termination; a window that
        meets a reset first (a truncation) or the end of the data is no transition."""
        out = {}
        for seq in self.sequence:
            for i, item in enumerate(seq):
                if item is None:
                    continue
                ret, k = 0.0, 0
                while k < n and i + k < len(seq) and seq[i + k] is not None:
                    _, _, r, next_obs, terminated = seq[i + k]
                    ret += gamma ** k * r
                    k += 1
                    if terminated:
                        break
                if terminated or k == n:
                    out[item[0].tobytes()] = (item[1], ret, next_obs, bool(terminated))
        return out


@pytest.mark.parametrize("num_envs", [1, 3])
def test_n_step_samples_match_the_reference_and_never_cross_a_truncation(num_envs):
    n, gamma = 3, 0.5
    rng = np.random.default_rng(num_envs)
    space = gym.spaces.Box(0, 255, (4, 2, 2), np.uint8)
    rb = dqn_atari.ReplayBuffer(space, buffer_args(37 * num_envs, num_envs, n_step=n, gamma=gamma), 0)
    reference = EpisodeReference(num_envs, 4, (2, 2))
    drive_synthetic(rb, reference, num_envs, 1000, rng)
    expected, seen = reference.n_step(n, gamma), set()
    for _ in range(100):
        obs, actions, rewards, next_obs, terminated = rb.sample(64, torch.device("cpu"))
        for i in range(64):
            key = obs[i].numpy().tobytes()
            assert key in expected  # a truncation-crossing or incomplete window is never sampled
            action, ret, ref_next, ref_term = expected[key]
            assert actions[i].item() == action and rewards[i].item() == pytest.approx(ret)
            assert terminated[i].item() == ref_term
            if not ref_term:  # (after a termination nothing is bootstrapped)
                np.testing.assert_array_equal(next_obs[i].numpy(), ref_next)
            seen.add(key)
    assert len(seen) > 20 and any(expected[k][3] for k in seen) and not all(expected[k][3] for k in seen)


def test_buffer_rebuilds_the_stacks_the_atari_env_gave_the_agent():
    """Real frames, 2 envs, short truncated games and a small ring: every sampled
    (obs, next_obs) pair is one the env really returned, on both sides of a reset."""
    args = dqn_atari.Args(max_episode_frames=300)
    envs = dqn_atari.make_env(args, 2)
    rb = dqn_atari.ReplayBuffer(envs.single_observation_space, buffer_args(2 * 150, 2), seed=0)
    obs, _ = envs.reset(seed=0)
    autoreset, real_pairs, rng = np.zeros(2, bool), set(), np.random.default_rng(0)
    truncations = 0
    for _ in range(400):
        actions = rng.integers(0, 4, size=2)
        next_obs, rewards, terminated, truncated, infos = envs.step(actions)
        for e in np.flatnonzero(~autoreset):
            real_pairs.add((obs[e].tobytes(), next_obs[e].tobytes(), int(actions[e])))
        rb.add(obs, actions, rewards, next_obs, terminated, truncated, reset=autoreset)
        # as train() does: a game that ended (not a lost life, which is terminal) resets next
        autoreset, obs = infos.get("_episode", np.zeros(2, bool)), next_obs
        assert (autoreset == terminated | truncated).all() or terminated.any()
        truncations += truncated.sum()
    envs.close()
    assert truncations >= 2
    for _ in range(20):
        b_obs, b_actions, _, b_next, _ = rb.sample(32, torch.device("cpu"))
        for i in range(32):
            pair = (b_obs[i].numpy().tobytes(), b_next[i].numpy().tobytes(), b_actions[i].item())
            assert pair in real_pairs


def test_sampling_a_buffer_without_transitions_is_an_error_not_a_hang():
    rb = dqn_atari.ReplayBuffer(gym.spaces.Box(0, 255, (4, 36, 36), np.uint8), buffer_args(100, 1), seed=0)
    rb.store(np.zeros((1, 36, 36)), [0], [0], [0], first=[True])  # a reset: no transition
    with pytest.raises(dqn.UsageError, match="no complete transitions"):
        rb.sample(8, torch.device("cpu"))


def test_buffer_of_1m_transitions_allocates_about_7_1_gb():
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    rb = dqn_atari.ReplayBuffer(space, dqn_atari.Args(device="cpu"), seed=0)  # np.zeros: pages are lazy
    nbytes = sum(a.nbytes for a in (rb.frames, rb.actions, rb.rewards, rb.terminated, rb.first))
    assert 7.0e9 < nbytes < 7.2e9


def moved(stack, dy, dx, pad=4):
    """np's reference of a shift: the stack padded by repeating its edge pixels, then cropped
    (dy, dx) away from the centre, so that pixel (y, x) shows (y + dy, x + dx), clamped."""
    height, width = stack.shape[-2:]
    padded = np.pad(stack, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    return padded[:, pad + dy:pad + dy + height, pad + dx:pad + dx + width]


def shift_of(stack, unshifted):
    """The (dy, dx) in [-4, 4]^2 that moves `unshifted` to `stack` (all its frames at once)."""
    found = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
             if np.array_equal(stack, moved(unshifted, dy, dx))]
    assert len(found) == 1, found
    return found[0]


def random_frame_buffer(random_shift, seed=0):
    """2 envs, 16x16 frames of noise, one long episode each (wrapped around), n_step 1:
    the reward of a transition is its id."""
    space = gym.spaces.Box(0, 255, (4, 16, 16), np.uint8)
    rb = dqn_atari.ReplayBuffer(space, buffer_args(100, 2, random_shift=random_shift), seed)
    rng = np.random.default_rng(1)
    rb.store(rng.integers(0, 256, (2, 16, 16), dtype=np.uint8), 0, 0, 0, first=True)
    for step in range(1, 61):
        rb.store(rng.integers(0, 256, (2, 16, 16), dtype=np.uint8), rng.integers(0, 4, 2),
                 np.array([2 * step, 2 * step + 1], np.float32), np.zeros(2), first=np.zeros(2, bool))
    return rb


def test_without_random_shift_sampling_draws_the_batches_it_drew_before_the_shift_existed(monkeypatch):
    """--random-shift 0 (the default): the stacks are not touched and the buffer's rng draws
    nothing more, so a seed samples what it sampled before; these rewards (transition ids)
    are the batches of seed 0 from the buffer of the commit before random shift."""
    monkeypatch.setattr(dqn_atari.ReplayBuffer, "random_shift", lambda self, stacks: 1 / 0)
    rb = random_frame_buffer(random_shift=0)
    assert dqn_atari.Args().random_shift == 0
    batches = [rb.sample(8, torch.device("cpu")) for _ in range(2)]
    assert [b[2].int().tolist() for b in batches] == [[84, 63, 51, 31, 105, 107, 101, 62],
                                                      [108, 86, 102, 54, 108, 49, 43, 61]]


def test_random_shift_moves_each_sampled_stack_by_at_most_4_pixels_with_edges_repeated():
    """--random-shift 4: the same transitions as without it (the indices are drawn first),
    each obs and next_obs stack moved as a whole by one (dy, dx) in [-4, 4]^2, its own."""
    cpu = torch.device("cpu")
    plain, shifted = random_frame_buffer(0).sample(64, cpu), random_frame_buffer(4).sample(64, cpu)
    obs, actions, rewards, next_obs, terminated = shifted
    for unshifted, tensor in zip(plain, shifted):
        assert tensor.dtype == unshifted.dtype and tensor.shape == unshifted.shape
    assert obs.dtype == next_obs.dtype == torch.uint8
    assert torch.equal(actions, plain[1]) and torch.equal(rewards, plain[2])
    assert torch.equal(terminated, plain[4])
    obs_shifts = [shift_of(obs[i].numpy(), plain[0][i].numpy()) for i in range(64)]
    next_shifts = [shift_of(next_obs[i].numpy(), plain[3][i].numpy()) for i in range(64)]
    assert len(set(obs_shifts)) > 20 and len(set(next_shifts)) > 20  # each stack its own draw
    assert sum(a != b for a, b in zip(obs_shifts, next_shifts)) > 50  # obs, next_obs: independent
    assert not torch.equal(obs, plain[0]) and not torch.equal(next_obs, plain[3])


def test_random_shift_draws_every_one_of_the_81_shifts_from_the_buffers_rng():
    """ReplayBuffer.random_shift on stacks whose pixels spell their coordinates (16 y + x):
    the centre pixel tells the shift; the whole stack is np.pad(mode="edge") cropped there;
    over 3000 stacks all 9 x 9 shifts occur, about equally; the same seed, the same shifts."""
    space = gym.spaces.Box(0, 255, (2, 16, 16), np.uint8)
    rb = dqn_atari.ReplayBuffer(space, buffer_args(100, 1, random_shift=4), seed=0)
    coords = np.arange(16)[:, None] * 16 + np.arange(16)  # pixel (y, x) holds 16 y + x
    stacks = np.broadcast_to(np.stack([coords, 255 - coords]), (3000, 2, 16, 16)).astype(np.uint8)
    out = rb.random_shift(torch.from_numpy(stacks))
    assert out.dtype == torch.uint8 and out.shape == stacks.shape
    out = out.numpy()
    centre = out[:, 0, 8, 8].astype(int)  # 16 (8 + dy) + (8 + dx)
    dy, dx = centre // 16 - 8, centre % 16 - 8
    for i in range(3000):
        np.testing.assert_array_equal(out[i], moved(stacks[i], int(dy[i]), int(dx[i])))
    counts = collections.Counter(zip(dy.tolist(), dx.tolist()))
    assert set(counts) == {(y, x) for y in range(-4, 5) for x in range(-4, 5)}
    assert min(counts.values()) > 10 and max(counts.values()) < 60  # about 37 each
    again = dqn_atari.ReplayBuffer(space, buffer_args(100, 1, random_shift=4), seed=0)
    np.testing.assert_array_equal(again.random_shift(torch.from_numpy(stacks)).numpy(), out)


# ---------------------------------------------------------------------------
# Network and learning


@pytest.mark.parametrize("size, flat", [(84, 3136), (36, 64)])
def test_qnetwork_derives_its_flatten_size_from_the_frame_size(size, flat):
    net = dqn_atari.QNetwork(gym.spaces.Box(0, 255, (4, size, size), np.uint8), 6, dqn_atari.Args())
    assert net.head.mlp[0].in_features == flat
    assert net(torch.zeros(5, 4, size, size, dtype=torch.uint8)).shape == (5, 6)


def test_atari_dueling_head_gives_one_q_per_action_averaging_to_v():
    args = dqn_atari.Args(dueling=True, device="cpu")
    net = dqn_atari.QNetwork(gym.spaces.Box(0, 255, (4, 36, 36), np.uint8), 6, args)
    assert net.head.mlp[-1].out_features == 7
    obs = torch.randint(0, 256, (5, 4, 36, 36), dtype=torch.uint8)
    q, raw = net(obs), net.head.mlp(net.conv(obs.float() / 255.0))
    assert q.shape == (5, 6)
    torch.testing.assert_close(q.mean(1), raw[:, 0])


def test_cnn_pipeline_learns_a_synthetic_pixel_env(tmp_path):
    """Random play earns 8 per episode, the optimal policy 16."""
    args = dqn_atari.Args(
        env_id="tests/Square-v0", total_timesteps=2_500, learning_starts=300, buffer_size=5_000,
        train_frequency=1, learning_rate=5e-4, target_network_frequency=200, gamma=0.5,
        exploration_fraction=0.3, eval_episodes=20, save_model=False, output_dir=str(tmp_path),
        log_interval=10**9, device="cpu", seed=0,
    )
    results = dqn_atari.train(args)
    assert np.mean(results.eval_returns) >= 14.5
    rb = results.replay_buffer
    assert set(np.unique(rb.rewards[:rb.size])) <= {0.0, 1.0}  # learns from clipped rewards
    assert max(results.episode_returns) > 8  # reports unclipped returns


def test_bf16_on_a_cpu_without_bfloat16_instructions_says_so_and_trains_in_float32(monkeypatch, capsys):
    """Emulated bfloat16 made an update 10x slower on an AVX2-only CPU (benchmarks/NOTES.md)."""
    monkeypatch.setattr(dqn_atari, "bf16_instructions", lambda: False)
    assert dqn_atari.Args(bf16=True, device="cpu").bf16 is False
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--bf16" in err and "float32" in err
    assert dqn_atari.Args(bf16=True, device="cuda").bf16 is True  # (a GPU: no check here)
    monkeypatch.setattr(dqn_atari, "bf16_instructions", lambda: True)
    assert dqn_atari.Args(bf16=True, device="cpu").bf16 is True and capsys.readouterr().err == ""


# ---------------------------------------------------------------------------
# Command line


@pytest.mark.parametrize("env_id, message", [("CartPole-v1", "not an Atari env"),
                                             ("ALE/NotAGame-v5", "cannot make env")])
def test_bad_env_id_is_a_one_line_error(tmp_path, env_id, message):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "dqn_atari.py"), "--env-id", env_id,
                           "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and message in proc.stderr
    assert os.listdir(tmp_path) == []


def test_import_has_no_side_effects(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import dqn_atari"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 0 and proc.stdout == "" and os.listdir(tmp_path) == []


def test_preset_atari100k_is_drq_epsilons_settings_on_the_command_line_and_in_python():
    argv = ["--preset", "atari100k", "--env-id", "ALE/Pong-v5"]
    args = dqn.parse_args(argv, dqn_atari.Args, dqn_atari.PRESETS, named=True)
    assert args == dqn.preset_args("ALE/Pong-v5", dqn_atari.Args, dqn_atari.PRESETS, preset="atari100k")
    assert args.env_id == "ALE/Pong-v5"
    assert (args.n_step, args.total_timesteps, args.random_shift, args.dueling) == (10, 100_000, 4, True)
    assert (args.eval_episodes, args.eval_epsilon, args.eval_max_steps) == (30, 0.001, 27_000)
    assert (args.optimizer, args.learning_rate, args.adam_eps) == ("adam", 1e-4, 1.5e-4)
    assert (args.learning_starts, args.end_e, args.exploration_fraction) == (1_600, 0.01, 0.066)
    assert args.batch_size == 32 and args.target_network_frequency == 1  # (its online target)


def test_a_flag_overrides_the_preset_and_without_a_preset_the_defaults_stand():
    parse = lambda *argv: dqn.parse_args(list(argv), dqn_atari.Args, dqn_atari.PRESETS, named=True)  # noqa: E731
    args = parse("--preset", "atari100k", "--n-step", "3", "--no-dueling", "--random-shift", "0")
    assert (args.n_step, args.dueling, args.random_shift) == (3, False, 0)
    assert args.total_timesteps == 100_000 and args.eval_episodes == 30  # the rest of the preset
    assert parse("--n-step", "3", "--preset", "atari100k").n_step == 3  # (before it, too)
    assert parse() == dqn_atari.Args()
    assert parse("--env-id", "ALE/Pong-v5") == dqn_atari.Args(env_id="ALE/Pong-v5")
    defaults = dqn_atari.Args()
    assert (defaults.n_step, defaults.random_shift, defaults.dueling) == (1, 0, False)
    assert defaults.total_timesteps == 12_500_000


# The Nature paper's Extended Data Table 1 (Mnih et al. 2015), in agent steps (4 frames each) as
# in DeepMind's code, and its evaluation: 30 games of up to 5 minutes at epsilon 0.05.
NATURE = dict(batch_size=32, buffer_size=1_000_000, frame_stack=4, target_network_frequency=10_000,
              gamma=0.99, frame_skip=4, train_frequency=4, learning_rate=2.5e-4, start_e=1.0,
              end_e=0.1, learning_starts=50_000, noop_max=30, optimizer="rmsprop", loss="huber",
              eval_episodes=30, eval_epsilon=0.05, eval_max_steps=4_500)


def test_the_defaults_are_the_nature_papers_settings():
    args = dqn_atari.Args()
    assert {name: getattr(args, name) for name in NATURE} == NATURE
    assert args.exploration_fraction * args.total_timesteps == 1_000_000  # epsilon's decay
    assert args.total_timesteps * args.frame_skip == 50_000_000  # frames
    assert (args.n_step, args.double_q, args.dueling, args.tau, args.gradient_steps) == (1, False, False, 1.0, 1)


def test_rmsprop_steps_are_within_a_root_2_of_the_papers_centred_rmsprop():
    """The paper's update, as DeepMind's code has it, on gradients summed over the batch:
    w -= lr g / sqrt(mean(g^2) - mean(g)^2 + 0.01), the means decaying by 0.95. torch's RMSprop
    on the batch's mean gradient, with its eps after the root, is never faster and at least
    1/sqrt(2) as fast; as fast where the gradient's variance is far from the floor either way."""
    args, generator = dqn_atari.Args(), torch.Generator().manual_seed(0)
    w = torch.zeros(3_000, requires_grad=True)
    optimizer = dqn_atari.make_optimizer([w], args, torch.device("cpu"))
    scales = torch.logspace(-6, 2, 3_000)  # gradient sizes from far below the floor to far above
    g, g2, ratios = torch.zeros(3_000).double(), torch.zeros(3_000).double(), []
    for _ in range(50):
        summed = scales * torch.randn(3_000, generator=generator)  # summed over the batch of 32
        w.grad = summed / args.batch_size  # the mean loss's gradient
        with torch.no_grad():
            w.zero_()  # (w is then the step itself, to float32's precision)
        optimizer.step()
        g, g2 = 0.95 * g + 0.05 * summed.double(), 0.95 * g2 + 0.05 * summed.double()**2
        paper = -args.learning_rate * summed.double() / (g2 - g**2 + 0.01).sqrt()
        ratios.append(w.detach().double() / paper)
    ratios = torch.stack(ratios)
    assert ratios.min() >= 2**-0.5 - 1e-3 and ratios.max() <= 1 + 1e-3
    assert ratios[:, :300].min() > 0.99 and ratios[10:, -100:].min() > 0.99  # far from the floor
    assert ratios.min() < 0.8  # (and near it, slower: this is not the paper's exact optimizer)


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_train_steps_the_optimizer_that_optimizer_names(tmp_path, optimizer):
    """As saved in the checkpoint: the paper's RMSProp (centred, 0.95, its floor), or Adam."""
    args = atari_args(tmp_path, optimizer=optimizer, checkpoint_every=650, learning_rate=3e-4)
    results = dqn_atari.train(args, verbose=False)
    saved = torch.load(os.path.join(results.output_dir, "checkpoint.pt"), weights_only=True)
    group = saved["modules"]["optimizer"]["param_groups"][0]
    assert saved["modules"]["optimizer"]["state"] and group["lr"] == 3e-4  # it took steps
    if optimizer == "rmsprop":
        assert (group["centered"], group["alpha"], group["eps"]) == (True, 0.95, 0.1 / 32)
    else:
        assert "betas" in group and group["eps"] == args.adam_eps


def test_a_preset_is_applied_one_way_only_so_settings_never_name_one_and_run_another():
    """In Python there is no Args(preset=...) that would name a preset and keep the defaults:
    dqn.preset_args applies it, as the command line does; a run's settings hold its values."""
    with pytest.raises(TypeError):
        dqn_atari.Args(preset="atari100k")
    assert "preset" not in dataclasses.asdict(dqn_atari.Args())


@pytest.mark.parametrize("script, preset, words", [("dqn_atari.py", "atari10k", "invalid choice"),
                                                   ("dqn.py", "atari100k", "--preset")])
def test_an_unknown_preset_is_a_short_error_and_leaves_nothing(tmp_path, script, preset, words):
    """dqn_atari.py knows atari100k (argparse's two lines: the choices); dqn.py has no --preset
    at all (tyro's box). Run where the default output directory (runs/) would be made."""
    proc = subprocess.run([sys.executable, os.path.join(REPO, script), "--preset", preset], cwd=tmp_path,
                          capture_output=True, encoding="utf-8", timeout=120,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 2 and proc.stdout == ""
    box = script == "dqn.py"
    assert proc.stderr.count("╭") == box and (box or len(proc.stderr.splitlines()) == 2)
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == []


def test_help_with_preset_atari100k_shows_the_presets_values():
    proc = subprocess.run([sys.executable, os.path.join(REPO, "dqn_atari.py"), "--preset", "atari100k", "--help"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0
    assert "(default: 100000)" in proc.stdout and "(default: 10000000)" not in proc.stdout
    assert "(default: 0.001)" in proc.stdout
