import collections
import os
import sys

import gymnasium as gym
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ChainEnv(gym.Env):
    """A toy env whose observations spell out where they are, so transitions can be checked.

    obs = [episode id, t, episode length]: the id is drawn at reset, t counts steps, and
    the episode terminates when t reaches its length (drawn in [2, 9]). Registered with
    max_episode_steps=6, so episodes longer than 6 are truncated instead. The reward
    10 * t + action names the (state, action) pair it came from.
    """

    MAX_STEPS = 6

    def __init__(self, nan_reward_after=None):
        self.observation_space = gym.spaces.Box(0, 1e6, shape=(3,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self.nan_reward_after, self.steps = nan_reward_after, 0  # steps over all episodes

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.id = float(self.np_random.integers(1, 1_000_000))
        self.length = int(self.np_random.integers(2, 10))
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = 10.0 * self.t + int(action)
        self.t += 1
        self.steps += 1
        if self.nan_reward_after is not None and self.steps > self.nan_reward_after:
            reward = float("nan")  # a broken env, for the divergence test
        return self._obs(), reward, self.t >= self.length, False, {}

    def _obs(self):
        return np.array([self.id, self.t, self.length], dtype=np.float32)


gym.register(id="tests/Chain-v0", entry_point=ChainEnv, max_episode_steps=ChainEnv.MAX_STEPS)
gym.register(id="tests/ChainNaN-v0", entry_point=ChainEnv, max_episode_steps=ChainEnv.MAX_STEPS,
             kwargs={"nan_reward_after": 250})


class SquareEnv(gym.Env):
    """A tiny pixel env that only a working CNN pipeline can solve.

    Each step draws a bright square on the left or the right of a 36x36 frame; the
    observation is the stack of the last 4 frames, zero-padded at reset like the
    Atari env's. Naming the square's side (action 0 left, 1 right) in the newest
    frame pays 2 (so clipping shows), anything else 0; episodes last LENGTH steps.
    """

    SIZE, STACK, LENGTH = 36, 4, 8

    def __init__(self):
        self.observation_space = gym.spaces.Box(0, 255, (self.STACK, self.SIZE, self.SIZE), np.uint8)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.frames = collections.deque([np.zeros((self.SIZE, self.SIZE), np.uint8)] * self.STACK,
                                        maxlen=self.STACK)
        self.t = 0
        self._draw()
        return np.stack(self.frames), {}

    def step(self, action):
        reward = 2.0 if int(action) == self.side else 0.0
        self.t += 1
        self._draw()
        return np.stack(self.frames), reward, self.t >= self.LENGTH, False, {}

    def _draw(self):
        self.side = int(self.np_random.integers(2))
        frame = np.zeros((self.SIZE, self.SIZE), np.uint8)
        left = 4 if self.side == 0 else self.SIZE // 2 + 4
        frame[12:24, left:left + 10] = 255
        self.frames.append(frame)


gym.register(id="tests/Square-v0", entry_point=SquareEnv)


class ConstantEnv(gym.Env):
    """Reward 1 on every step, whatever the action; the episode never terminates and is only
    truncated by its time limit. So Q(s, a) = 1 / (1 - gamma) exactly, for any n-step return:
    a target that mistakes truncation for termination, or discounts wrongly, learns another value.
    pixels=True gives dqn_atari.py's observations (a stack of blank frames)."""

    def __init__(self, pixels=False):
        self.observation_space = (gym.spaces.Box(0, 255, (4, 36, 36), np.uint8) if pixels
                                  else gym.spaces.Discrete(1))
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample() * 0, {}

    def step(self, action):
        return self.observation_space.sample() * 0, 1.0, False, False, {}


gym.register(id="tests/Constant-v0", entry_point=ConstantEnv, max_episode_steps=5)
gym.register(id="tests/ConstantPixels-v0", entry_point=ConstantEnv, max_episode_steps=5, kwargs={"pixels": True})


@pytest.fixture
def tiny_args(tmp_path):
    """Arguments for a run that takes well under a second, writing into a temp dir."""
    import dqn

    def make(**overrides):
        settings = dict(env_id="tests/Chain-v0", total_timesteps=300, learning_starts=100,
                        batch_size=16, buffer_size=1_000, hidden_sizes=(16,), eval_episodes=2,
                        output_dir=str(tmp_path), log_interval=100_000)
        return dqn.Args(**{**settings, **overrides})

    return make
