"""An episode recorder outside the learner, so that every implementation is measured the same way.

Each run writes one CSV, episodes.csv, with a row per finished training episode:

    step       env steps (transitions) so far, counted when the episode ended
    seconds    seconds since the run's process was launched (not since training started)
    return     the episode's undiscounted return
    length     the episode's length in steps

`VectorEpisodeRecorder` wraps a gymnasium vector env with NEXT_STEP autoreset (dqn.py's);
`EpisodeRecorder` wraps a single gymnasium env (Stable-Baselines3's DummyVecEnv resets an
env itself, in the step that ends its episode). Both write to one shared `EpisodeLog`.
"""

import csv
import time

import gymnasium as gym
import numpy as np


class EpisodeLog:
    """Counts env steps and writes one CSV row per finished episode, flushed at once."""

    def __init__(self, path: str, launched: float):
        self.launched = launched  # unix time at which the runner started the process
        self.steps = 0  # real transitions, over all envs
        self.episodes = 0
        self.first_step_s = None  # seconds since launch at the first env step
        self.last_step_s = None  # and at the latest
        self.file = open(path, "w", newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerow(["step", "seconds", "return", "length"])

    def add_steps(self, n: int) -> None:
        now = time.time() - self.launched
        if self.first_step_s is None:
            self.first_step_s = now
        self.last_step_s = now
        self.steps += n

    def episode(self, episode_return: float, length: int) -> None:
        self.episodes += 1
        self.writer.writerow([self.steps, f"{time.time() - self.launched:.3f}",
                              repr(float(episode_return)), int(length)])
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class VectorEpisodeRecorder(gym.vector.VectorWrapper):
    """Records the episodes of a vector env with NEXT_STEP autoreset.

    The step after an episode's end is a reset step (its action is ignored, its reward is 0):
    it is not a transition, so it counts neither as an env step nor towards a return, as in
    dqn.py's global_step. Episodes cut short by reset() are not recorded.
    """

    def __init__(self, env: gym.vector.VectorEnv, log: EpisodeLog):
        super().__init__(env)
        assert env.metadata.get("autoreset_mode") == gym.vector.AutoresetMode.NEXT_STEP
        self.log = log
        self._clear()

    def _clear(self):
        self.returns = np.zeros(self.num_envs)
        self.lengths = np.zeros(self.num_envs, dtype=np.int64)
        self.autoreset = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed=None, options=None):
        self._clear()
        return self.env.reset(seed=seed, options=options)

    def step(self, actions):
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        real = ~self.autoreset
        self.returns[real] += rewards[real]
        self.lengths[real] += 1
        self.log.add_steps(int(real.sum()))
        done = np.logical_or(terminated, truncated)
        for i in np.flatnonzero(done):
            self.log.episode(self.returns[i], self.lengths[i])
        self.returns[done], self.lengths[done] = 0.0, 0
        self.autoreset = done
        return obs, rewards, terminated, truncated, info


class EpisodeRecorder(gym.Wrapper):
    """Records the episodes of a single env: every step is a transition."""

    def __init__(self, env: gym.Env, log: EpisodeLog):
        super().__init__(env)
        self.log = log
        self.episode_return, self.length = 0.0, 0

    def reset(self, **kwargs):
        self.episode_return, self.length = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.episode_return += float(reward)
        self.length += 1
        self.log.add_steps(1)
        if terminated or truncated:
            self.log.episode(self.episode_return, self.length)
            self.episode_return, self.length = 0.0, 0
        return obs, reward, terminated, truncated, info
