"""Deep Q-Network (DQN) in one file, for gymnasium environments with discrete actions.

DQN (Mnih et al. 2015, "Human-level control through deep reinforcement learning")
learns Q(s, a), the expected discounted return of taking action a in state s, by
regressing it towards the Bellman target r + gamma * max_a' Q_target(s', a'), on
transitions replayed uniformly from a buffer of past experience.

    pip install -r requirements.txt
    python dqn.py --env-id CartPole-v1        # --help lists every flag, with this env's values
    python dqn.py --eval-only runs/<run>      # evaluate a trained network (--watch to see it)

The defaults in Args are the 2015 algorithm: one-step targets, the Huber loss, a target
network copied every 500 steps, epsilon-greedy exploration. PRESETS changes them per env,
with what measured best (README, Results). The default CartPole-v1 run is a Double DQN
with 10-step returns, LayerNorm, 8 envs and a target network that follows the online one
by Polyak averaging; the 2015 DQN on it is
    python dqn.py --env-id CartPole-v1 --n-step 1 --no-double-q --no-layer-norm \
        --no-small-last-layer --loss huber --tau 1 --target-network-frequency 500 --num-envs 1
(the 2015 algorithm with CartPole's learning rate, buffer and exploration schedule).

Sections, in reading order: Args and PRESETS, make_env, QNetwork, ReplayBuffer,
linear_schedule and select_action, td_target and td_loss, n_step_transitions, Adam and
gradient_step, update_target, evaluate, the loop state and its checkpoint, train (act,
store, learn, log), main.
"""

import argparse
import collections
import contextlib
import copy
import csv
import dataclasses
import importlib.util
import io
import itertools
import json
import math
import os
import pickle
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro


# ----------------------------------------------------------------------------
# Settings


@dataclass
class Args:
    # Environment
    env_id: str = "CartPole-v1"  # any gymnasium env with Discrete actions and Box or Discrete observations
    seed: int = 1  # seeds network init, exploration, replay sampling and the envs
    total_timesteps: int = 100_000  # env steps (transitions) to train for, summed over all envs
    num_envs: int = 1  # envs stepped in lockstep, acting from one batched forward pass

    # Learning
    learning_rate: float = 1e-3  # Adam learning rate
    lr_end_fraction: float = 1.0  # learning rate at the end / learning_rate (linear from step 0; 1: constant)
    gamma: float = 0.99  # discount factor of future rewards
    batch_size: int = 128  # transitions per gradient update
    buffer_size: int = 50_000  # replay capacity in transitions; the oldest are overwritten first
    learning_starts: int = 1_000  # env steps collected before the first gradient update
    train_frequency: int = 4  # env steps between two rounds of gradient updates
    gradient_steps: int = 1  # gradient updates per round
    target_network_frequency: int = 500  # env steps between two target-network updates
    tau: float = 1.0  # target update: 1.0 copies the online net, < 1 moves this fraction towards it
    n_step: int = 1  # the target sums n discounted rewards, then bootstraps n steps later
    double_q: bool = False  # Double DQN: the online net picks a', the target net values it
    loss: Literal["huber", "mse"] = "huber"  # TD loss: huber is the Nature paper's error clipping
    max_grad_norm: float = 0.0  # clip the gradient's global norm to this value; 0 turns clipping off
    hidden_sizes: tuple[int, ...] = (128, 128)  # widths of the MLP's hidden layers
    layer_norm: bool = False  # LayerNorm after each hidden layer (stabler with a fast target)
    small_last_layer: bool = False  # output layer initialised near zero: every Q-value starts near 0

    # Exploration
    start_e: float = 1.0  # epsilon (probability of a random action) at step 0
    end_e: float = 0.05  # epsilon after the decay
    exploration_fraction: float = 0.2  # fraction of total_timesteps over which epsilon decays linearly

    # Evaluation, output, machine
    eval_episodes: int = 10  # greedy episodes on a separate env after training
    eval_max_steps: int = 10_000  # evaluation episodes are cut short here (envs without a time limit)
    eval_only: str = ""  # evaluate the model.pt of this run directory (or file); no training
    watch: bool = False  # show the evaluation episodes in a window (needs a display)
    capture_video: bool = False  # record the evaluation episodes to mp4 (needs moviepy)
    log_interval: int = 5_000  # env steps between two progress lines
    output_dir: str = "runs"  # runs write to output_dir/<env>__<seed>__<date-time>/
    save_model: bool = True  # save the trained Q-network and these args to model.pt
    tensorboard: bool = False  # also log to TensorBoard (needs tensorboard)
    device: str = "cpu"  # torch device (cpu, cuda, cuda:1, mps); small MLPs are fastest on the CPU
    torch_threads: int = 1  # CPU threads for torch (a small MLP's update is no faster on 2)

    # Checkpoints
    checkpoint_every: int = 10_000  # env steps between checkpoints (0: none); Ctrl-C and SIGTERM write one
    checkpoint_buffer: bool = False  # also save the buffer and the envs (where they pickle): a resumed run is exact
    resume: str = ""  # go on with the run in this checkpoint (or run directory), with its own args


# Per-env settings: what each env changes in Args. Measured by benchmarks/run.py (README, Results).
PRESETS = {
    "CartPole-v1": dict(total_timesteps=40_000, num_envs=8, learning_rate=4e-3, gamma=0.995,
                        buffer_size=10_000, train_frequency=24, target_network_frequency=8, tau=0.2,
                        n_step=10, double_q=True, loss="mse", layer_norm=True, small_last_layer=True,
                        end_e=0.01, exploration_fraction=0.15),
    "Acrobot-v1": dict(num_envs=4, train_frequency=16, gradient_steps=4, target_network_frequency=4,
                       tau=0.02, n_step=3, double_q=True, hidden_sizes=(256, 256), layer_norm=True,
                       exploration_fraction=0.12),
    "MountainCar-v0": dict(total_timesteps=120_000, learning_rate=4e-3, gamma=0.98, buffer_size=10_000,
                           train_frequency=16, gradient_steps=8, target_network_frequency=600, n_step=3,
                           max_grad_norm=10.0, hidden_sizes=(256, 256), end_e=0.07),
    "LunarLander-v3": dict(total_timesteps=200_000, num_envs=4, learning_rate=6.3e-4, lr_end_fraction=0.0,
                           buffer_size=100_000, train_frequency=16, gradient_steps=8, target_network_frequency=4,
                           tau=0.02, n_step=3, double_q=True, layer_norm=True, exploration_fraction=0.12),
}


def preset_args(env_id: str, **overrides) -> Args:
    """Args for env_id: the defaults, then the env's PRESETS entry, then `overrides`."""
    return Args(**{**PRESETS.get(env_id, {}), "env_id": env_id, **overrides})


class UsageError(Exception):
    """Bad input (a flag, an env, a file): reported as one line, exit code 2."""


RANGES = [  # (field, lowest, highest) of every numeric setting
    ("seed", 0, math.inf), ("total_timesteps", 1, math.inf), ("num_envs", 1, math.inf),
    ("learning_rate", 0, math.inf), ("lr_end_fraction", 0, 1), ("gamma", 0, 1), ("batch_size", 1, math.inf),
    ("buffer_size", 1, math.inf), ("learning_starts", 0, math.inf), ("train_frequency", 1, math.inf),
    ("gradient_steps", 1, math.inf), ("target_network_frequency", 1, math.inf), ("tau", 0, 1), ("n_step", 1, math.inf),
    ("max_grad_norm", 0, math.inf), ("hidden_sizes", 1, math.inf), ("start_e", 0, 1), ("end_e", 0, 1),
    ("exploration_fraction", 0, 1), ("eval_episodes", 0, math.inf), ("eval_max_steps", 1, math.inf),
    ("log_interval", 1, math.inf), ("torch_threads", 1, math.inf), ("checkpoint_every", 0, math.inf),
]


def check_args(args: Args) -> None:
    """Every value in range, each error naming its flag and value."""
    for name, low, high in RANGES:
        value = getattr(args, name)
        if not all(low <= v <= high for v in (value if isinstance(value, tuple) else [value])):
            raise UsageError(f"--{name.replace('_', '-')} {value} is out of range: "
                             f"it must be in [{low}, {high}]")
    if args.buffer_size < args.batch_size:
        raise UsageError(f"--buffer-size {args.buffer_size} is smaller than --batch-size {args.batch_size}")
    if args.learning_starts >= args.total_timesteps:
        raise UsageError(f"--total-timesteps {args.total_timesteps} ends before learning starts "
                         f"(--learning-starts {args.learning_starts}): lower one or raise the other")


# ----------------------------------------------------------------------------
# Environment


def make_env(args: Args, num_envs: int) -> gym.vector.VectorEnv:
    """A vector env of `num_envs` copies of args.env_id.

    gymnasium 1.x vector envs auto-reset on the NEXT step: the step that ends an episode
    returns its true final observation, and the following step ignores the action and
    returns the first observation of a new episode (reward 0). That reset step is not a
    transition; train() never stores it.
    """
    env_id = args.env_id
    try:
        # CartPole has a numpy-vectorized implementation that gymnasium picks here; other
        # envs run as copies stepped one after another (SyncVectorEnv).
        envs = gym.make_vec(env_id, num_envs=num_envs)
    except gym.error.Error as e:  # unknown id, missing package (box2d, ...)
        raise UsageError(f"{env_id} is an Atari game: train it with dqn_atari.py" if is_atari(env_id)
                         else f"cannot make env {env_id!r}: {e}") from None
    error = (f"{env_id} is an Atari game: train it with dqn_atari.py" if ":" in env_id and is_atari(env_id)
             else f"DQN needs a Discrete action space, {env_id} has {envs.single_action_space}; for "
             "continuous actions use an actor-critic method (SAC, TD3)"
             if not isinstance(envs.single_action_space, gym.spaces.Discrete)
             else f"unsupported observation space {envs.single_observation_space}: dqn.py takes Box "
             "(flattened) or Discrete (one-hot) observations; wrap the env to flatten it"
             if not isinstance(envs.single_observation_space, (gym.spaces.Box, gym.spaces.Discrete)) else "")
    if error:  # (ale_py:ALE/<Game> ids import ale_py themselves, so they make an env)
        envs.close()
        raise UsageError(error)
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    return envs


def is_atari(env_id: str) -> bool:
    """An id of ale-py's (ALE/Pong-v5, PongNoFrameskip-v4): those are dqn_atari.py's."""
    try:
        import ale_py  # noqa: F401  (registers the ALE ids, where it is installed)
        return gym.spec(env_id.split(":")[-1]).entry_point.startswith("ale_py")
    except (ImportError, gym.error.Error):
        return False


# ----------------------------------------------------------------------------
# Q-network


class QNetwork(nn.Module):
    """MLP from an observation to one Q-value per action: (batch, *obs_shape) -> (batch, n_actions)."""

    def __init__(self, obs_space: gym.Space, n_actions: int, hidden_sizes=(128, 128),
                 layer_norm=False, small_last_layer=False):
        super().__init__()
        # A Discrete observation is an index, fed to the MLP as a one-hot vector.
        self.n_obs_values = obs_space.n if isinstance(obs_space, gym.spaces.Discrete) else 0
        in_size = self.n_obs_values or int(np.prod(obs_space.shape))
        layers = []
        for size in hidden_sizes:
            layers += [nn.Linear(in_size, size), *([nn.LayerNorm(size)] if layer_norm else []), nn.ReLU()]
            in_size = size
        self.mlp = nn.Sequential(*layers, nn.Linear(in_size, n_actions))
        if small_last_layer:
            with torch.no_grad():
                self.mlp[-1].weight.mul_(0.01)
                self.mlp[-1].bias.zero_()
        self.n_actions = n_actions

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.n_obs_values:
            x = F.one_hot(obs.long(), self.n_obs_values).float()  # (batch, n_obs_values)
        else:
            x = obs.flatten(1).float()  # (batch, obs_size)
        return self.mlp(x)  # (batch, n_actions)


def make_network(args: Args, envs, device: torch.device) -> QNetwork:
    return QNetwork(envs.single_observation_space, int(envs.single_action_space.n), args.hidden_sizes,
                    args.layer_norm, args.small_last_layer).to(device)


# ----------------------------------------------------------------------------
# Replay buffer


class ReplayBuffer:
    """Ring buffer of transitions (obs, action, reward, next_obs, terminated).

    Arrays are preallocated with the observation space's shape and dtype. Once full,
    each new transition overwrites the oldest one. Sampling is uniform, with replacement.
    """

    def __init__(self, capacity: int, obs_space: gym.Space, seed: int):
        obs_bytes = int(np.prod(obs_space.shape)) * obs_space.dtype.itemsize
        check_memory(capacity * (2 * obs_bytes + 16), "--buffer-size")  # obs, next_obs, a, r, terminated
        self.capacity = capacity
        self.obs = np.zeros((capacity, *obs_space.shape), dtype=obs_space.dtype)
        self.next_obs = np.zeros_like(self.obs)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.pos = 0  # where the next transition is written
        self.size = 0  # transitions stored, at most capacity
        self.rng = np.random.default_rng(seed)

    def add(self, obs, actions, rewards, next_obs, terminated) -> None:
        """Store a batch of transitions, one row each (k rows, k >= 0)."""
        idx = (self.pos + np.arange(len(actions))) % self.capacity
        self.obs[idx] = obs
        self.actions[idx] = actions
        self.rewards[idx] = rewards
        self.next_obs[idx] = next_obs
        self.terminated[idx] = terminated
        self.pos = (self.pos + len(actions)) % self.capacity
        self.size = min(self.size + len(actions), self.capacity)

    def sample(self, batch_size: int, device: torch.device):
        idx = self.rng.integers(0, self.size, size=batch_size)
        arrays = (self.obs, self.actions, self.rewards, self.next_obs, self.terminated)
        return tuple(torch.as_tensor(a[idx], device=device) for a in arrays)


def check_memory(nbytes: int, flag: str) -> None:
    """Refuse, before allocating, what this machine's memory cannot hold."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if nbytes > 0.9 * total:
        raise UsageError(f"{flag} needs {nbytes / 1e9:.1f} GB of memory, this machine has "
                         f"{total / 1e9:.1f} GB: lower {flag}")


# ----------------------------------------------------------------------------
# Algorithm: exploration, TD target and loss, n-step returns, target network


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """Goes linearly from `start` at t=0 to `end` at t=duration, then stays at `end`."""
    return end if t >= duration else start + (end - start) * t / duration


def select_action(q_network: nn.Module, obs: np.ndarray, epsilon: float,
                  rng: np.random.Generator, device: torch.device) -> np.ndarray:
    """Epsilon-greedy actions for a batch of observations: (n_envs, *obs_shape) -> (n_envs,)."""
    n = len(obs)
    explore = rng.random(n) < epsilon
    actions = rng.integers(0, q_network.n_actions, size=n)
    if not explore.all():  # skip the forward pass when every env explores
        with torch.no_grad():
            q = q_network(torch.as_tensor(obs, device=device))  # (n_envs, n_actions)
        actions = np.where(explore, actions, q.argmax(dim=1).cpu().numpy())
    return actions


@torch.no_grad()
def td_target(q_network, target_network, rewards, next_obs, terminated, discount: float, double_q: bool):
    """y = R + discount * (1 - terminated) * Q_target(s', a'), with discount = gamma ** n_step.

    a' = argmax Q_target(s', .) (DQN), or argmax Q_online(s', .) (Double DQN)."""
    next_q = target_network(next_obs)  # (batch, n_actions)
    next_action = (q_network(next_obs) if double_q else next_q).argmax(1, keepdim=True)
    # Only `terminated` (the MDP really ended) stops bootstrapping. A time-limit truncation
    # is stored as not terminated, with s' its true final observation: its value is still
    # bootstrapped, because the future did not end, we stopped watching.
    return rewards + discount * (1.0 - terminated) * next_q.gather(1, next_action).squeeze(1)


def td_loss(q_network, target_network, batch, discount: float, loss: str, double_q: bool):
    """Loss between Q(s, a) and the TD target for a batch (s, a, R, s', terminated); returns (loss, Q(s, a))."""
    obs, actions, rewards, next_obs, terminated = batch
    target = td_target(q_network, target_network, rewards, next_obs, terminated, discount, double_q)
    q = q_network(obs).gather(1, actions.unsqueeze(1)).squeeze(1)  # (batch,)
    return (F.smooth_l1_loss(q, target) if loss == "huber" else F.mse_loss(q, target)), q


def n_step_transitions(windows, real, obs, actions, rewards, next_obs, terminated, truncated,
                       n: int, gamma: float):
    """The transitions (s_t, a_t, r_t + gamma r_t+1 + ... + gamma^(n-1) r_t+n-1, s_t+n, terminated)
    completed by this step, as arrays of k rows (k >= 0); the TD target bootstraps them with
    gamma^n. n = 1 gives the one-step transitions (s, a, r, s', terminated).

    windows[i] holds env i's last steps not yet stored. When an episode terminates, its last
    n-1 steps are stored with the rewards up to the end (nothing to bootstrap). When it is
    truncated, they are dropped: they would need gamma^k, k < n, to bootstrap from the final
    observation, and n-1 transitions per episode are few. Reset steps (real False) are skipped.
    """
    if n == 1:  # the same, without the per-env loop
        return obs[real], actions[real], rewards[real], next_obs[real], terminated[real]
    out = []
    for i in np.flatnonzero(real):
        window = windows[i]
        window.append((obs[i], actions[i], rewards[i]))
        while len(window) == n or (terminated[i] and window):
            ret = sum(gamma ** k * r for k, (_, _, r) in enumerate(window))
            o, a, _ = window.popleft()
            out.append((o, a, ret, next_obs[i], terminated[i]))
        if truncated[i]:
            window.clear()
    if not out:
        return obs[:0], actions[:0], rewards[:0], next_obs[:0], terminated[:0]
    return tuple(np.array(column) for column in zip(*out))


class Adam:
    """Adam (Kingma and Ba, 2015, section 2's efficient form), with torch.optim.Adam's defaults.
    Written out because torch.optim's first use imports torch._dynamo: a second of start-up,
    a fifth of a CartPole run. Each line updates every parameter at once (torch._foreach_*)."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps = list(params), lr, betas, eps
        self.t = 0  # steps taken
        self.m = [torch.zeros_like(p) for p in self.params]  # running mean of the gradient
        self.v = [torch.zeros_like(p) for p in self.params]  # running mean of its square

    @torch.no_grad()
    def step(self) -> None:
        (b1, b2), grads = self.betas, [p.grad for p in self.params]
        self.t += 1
        torch._foreach_lerp_(self.m, grads, 1 - b1)  # m <- b1 m + (1 - b1) g
        torch._foreach_mul_(self.v, b2)
        torch._foreach_addcmul_(self.v, grads, grads, 1 - b2)  # v <- b2 v + (1 - b2) g^2
        denom = torch._foreach_sqrt(self.v)
        torch._foreach_add_(denom, self.eps * math.sqrt(1 - b2 ** self.t))
        step_size = self.lr * math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)  # both bias corrections
        torch._foreach_addcdiv_(self.params, self.m, denom, -step_size)  # p <- p - step_size m / denom

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict:
        return {"t": self.t, "m": self.m, "v": self.v}

    def load_state_dict(self, saved: dict) -> None:
        self.t = saved["t"]
        for mine, theirs in zip(self.m + self.v, saved["m"] + saved["v"]):
            mine.copy_(theirs)


def gradient_step(q_network, target_network, optimizer, batch, args: Args) -> float:
    """One Adam step of the online network towards the n-step TD target; returns the loss.
    A NaN or infinite loss is returned without a step, so the weights stay finite."""
    loss, _ = td_loss(q_network, target_network, batch, args.gamma ** args.n_step, args.loss, args.double_q)
    if torch.isfinite(loss):
        optimizer.zero_grad()
        loss.backward()
        if args.max_grad_norm:
            nn.utils.clip_grad_norm_(q_network.parameters(), args.max_grad_norm)
        optimizer.step()
    return loss.item()


def update_target(target_network: nn.Module, q_network: nn.Module, tau: float) -> None:
    """target <- tau * online + (1 - tau) * target; tau = 1 is an exact copy."""
    with torch.no_grad():
        for t, o in zip(target_network.parameters(), q_network.parameters()):
            t.mul_(1.0 - tau).add_(o, alpha=tau)


# ----------------------------------------------------------------------------
# Evaluation


def evaluate(q_network: nn.Module, args: Args, device: torch.device, video_dir: str = "", say=print) -> list:
    """Returns of args.eval_episodes episodes of the greedy policy on a fresh env, each cut short
    after args.eval_max_steps steps; recorded to video_dir, or shown with --watch."""
    if video_dir:  # (a video takes the frames that --watch would show)
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renders off-screen, no display needed
        env = gym.wrappers.RecordVideo(gym.make(args.env_id, render_mode="rgb_array"), video_dir,
                                       episode_trigger=lambda _: True, disable_logger=True)
    else:
        env = gym.make(args.env_id, render_mode="human") if args.watch else gym.make(args.env_id)
    seed = run_seeds(args.seed)["eval"]
    rng, returns, cut = np.random.default_rng(seed), [], 0
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=seed + episode)
        episode_return, done, steps = 0.0, False, 0
        while not done and steps < args.eval_max_steps:
            action = select_action(q_network, np.asarray(obs)[None], 0.0, rng, device)[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            episode_return, done, steps = episode_return + float(reward), terminated or truncated, steps + 1
        returns.append(episode_return)
        cut += not done
    env.close()
    if cut:
        say(f"{cut} of {len(returns)} evaluation episodes were cut short at --eval-max-steps {args.eval_max_steps}")
    if returns:
        say(f"evaluation over {len(returns)} episodes: {np.mean(returns):.1f} +- {np.std(returns):.1f}")
    return returns


# ----------------------------------------------------------------------------
# Random streams, loop state and checkpoints (a run stopped by Ctrl-C, SIGTERM or a crash
# goes on with --resume)


def run_seeds(seed: int) -> dict:
    """One seed per random stream of the run, all derived from --seed so that no two streams
    (nor the streams of two runs) draw the same numbers. Env i is reset with envs + i, and
    evaluation episode i with eval + i."""
    names = ["network", "explore", "replay", "envs", "eval"]
    # 30 bits: room for seed + i in the 32-bit seeds of C++ simulators (ale-py)
    return {name: int(s.generate_state(1)[0]) % 2**30 for name, s in zip(names, np.random.SeedSequence(seed).spawn(5))}


@dataclass
class State:
    """Everything that changes while training: saved whole in a checkpoint, restored whole."""
    explore_rng: np.random.Generator
    learning_starts: int  # no update before this step: --learning-starts, later after a resume without the buffer
    next_log: int  # the step of the next progress line
    obs: np.ndarray  # the envs' current observations
    autoreset: np.ndarray  # env i's last step ended an episode: its next step is a reset
    windows: list  # per env, its last steps whose n-step transition is not stored yet
    running_return: np.ndarray  # per env, the return of its current episode so far
    running_length: np.ndarray
    global_step: int = 0  # transitions collected, over all envs
    episode_returns: list = dataclasses.field(default_factory=list)
    episode_steps: list = dataclasses.field(default_factory=list)  # global_step at each episode's end
    losses: list = dataclasses.field(default_factory=list)  # (global_step, mean loss since the last line)
    recent_losses: list = dataclasses.field(default_factory=list)
    last_loss: float = float("nan")
    train_seconds: float = 0.0  # over every segment of a resumed run
    metrics_bytes: int = 0  # the length of metrics.csv when the checkpoint was written


def start_episodes(envs, seed: int) -> dict:
    """New episodes in every env (env i reset with seed + i): the State fields that start over."""
    obs, _ = envs.reset(seed=seed)
    n = envs.num_envs
    return dict(obs=obs, autoreset=np.zeros(n, dtype=bool), windows=[collections.deque() for _ in range(n)],
                running_return=np.zeros(n), running_length=np.zeros(n, dtype=np.int64))


def save_checkpoint(path: str, args: Args, state: State, modules: dict, envs, rb) -> None:
    """Write what the run needs to go on, atomically: into a temporary file renamed over `path`,
    so that a kill during the write leaves the last checkpoint whole. With --checkpoint-buffer,
    also the replay buffer and the envs, where they pickle: a resumed run is then exact."""
    checkpoint = {"args": dataclasses.asdict(args), "state": vars(state),
                  "modules": {name: m.state_dict() for name, m in modules.items()},
                  "replay_buffer": None, "envs": None}
    if args.checkpoint_buffer:  # numpy arrays as tensors: torch.save writes them without a copy
        checkpoint["replay_buffer"] = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                                       for k, v in vars(rb).items()}
        checkpoint["envs"] = pickle_env(envs)
    with open(path + ".tmp", "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename
    os.replace(path + ".tmp", path)


def pickle_env(envs) -> bytes | None:
    """The vector env's state as bytes (each copy's simulator, RNG and time limit), or None
    where pickling cannot capture it: C++ simulators fail to pickle, and gymnasium's
    EzPickle envs (Box2D, MuJoCo) pickle only their constructor arguments."""
    if any(isinstance(e.unwrapped, gym.utils.EzPickle) for e in getattr(envs, "envs", [envs])):
        return None
    env_fns = getattr(envs, "env_fns", None)  # SyncVectorEnv keeps its env factories: closures
    try:
        if env_fns:
            envs.env_fns = None
        return pickle.dumps(envs)
    except Exception:  # not picklable: the resumed run starts new episodes
        return None
    finally:
        if env_fns:
            envs.env_fns = env_fns


def load_checkpoint(path: str) -> tuple[Args, dict]:
    """A checkpoint file, or the one in a run directory: (its Args, the rest)."""
    path = os.path.join(path, "checkpoint.pt") if os.path.isdir(path) else path
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        args = Args(**{**checkpoint["args"], "resume": path})
        checkpoint["state"], checkpoint["modules"]  # noqa: B018  (a model.pt has neither)
    except OSError as e:
        raise UsageError(f"cannot resume from {path}: {e.strerror}") from None
    except Exception:
        raise UsageError(f"cannot resume from {path}: not a checkpoint.pt written by this program "
                         "(to evaluate a model.pt, use --eval-only)") from None
    return args, checkpoint


def restore_checkpoint(checkpoint: dict, args: Args, modules: dict, envs, rb, seeds: dict):
    """The saved loop state, networks and optimizer, and the buffer and envs where they were saved.
    Without the buffer, it is refilled before learning again; without the envs, new episodes start."""
    state = State(**checkpoint["state"])
    for name, m in modules.items():
        m.load_state_dict(checkpoint["modules"][name])
    if checkpoint["replay_buffer"] is None:
        state.learning_starts = state.global_step + max(args.learning_starts, args.batch_size)
    else:
        for k, v in checkpoint["replay_buffer"].items():
            setattr(rb, k, v.numpy() if isinstance(v, torch.Tensor) else v)
    if checkpoint["envs"] is None:
        vars(state).update(start_episodes(envs, seeds["envs"] + state.global_step))
    else:
        envs.close()
        envs = pickle.loads(checkpoint["envs"])
    return state, envs


@contextlib.contextmanager
def stop_signals():
    """Within it, Ctrl-C (SIGINT) and SIGTERM append to the yielded list instead of ending the
    process, so that train() finishes its step and writes a checkpoint; a second Ctrl-C
    quits at once. The previous handlers are put back on exit."""
    stop, handlers = [], {}

    def handler(signum, frame):
        if stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.append(signum)

    if threading.current_thread() is threading.main_thread():  # only it may set handlers
        handlers = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, previous in handlers.items():
            signal.signal(sig, previous)


# ----------------------------------------------------------------------------
# Training


@dataclass
class Results:
    args: Args  # the settings it ran with
    q_network: nn.Module
    episode_returns: list  # every training episode's return, in order of completion
    episode_steps: list  # global env step at which each episode ended
    losses: list  # (global env step, mean loss since the previous progress line)
    eval_returns: list  # returns of the final evaluation
    replay_buffer: ReplayBuffer
    output_dir: str
    stopped_by: int = 0  # the signal (SIGINT, SIGTERM) that stopped training early, else 0


class TrainingDiverged(Exception):
    """The loss became NaN or infinite: reported as one line, exit code 1."""


def train(args: Args, verbose: bool = True) -> Results:
    """Train a Q-network (or go on with the run saved in args.resume); verbose=False prints nothing."""
    say = print if verbose else lambda *_, **__: None
    checkpoint = None
    if args.resume:  # the saved run's own settings, on this machine's device and threads
        saved, checkpoint = load_checkpoint(args.resume)
        args = dataclasses.replace(saved, device=args.device, torch_threads=args.torch_threads)
    device, seeds = setup(args), run_seeds(args.seed)
    with contextlib.ExitStack() as cleanup:  # closed, and torch's thread count put back, on every exit
        cleanup.callback(torch.set_num_threads, torch.get_num_threads())
        torch.set_num_threads(args.torch_threads)
        envs = make_env(args, args.num_envs)
        cleanup.callback(lambda: envs.close())  # late-bound: a resume may put the saved envs in its place
        torch.manual_seed(seeds["network"])
        q_network = make_network(args, envs, device)
        target_network = copy.deepcopy(q_network)
        optimizer = Adam(q_network.parameters(), lr=args.learning_rate)
        modules = {"q_network": q_network, "target_network": target_network, "optimizer": optimizer}
        rb = ReplayBuffer(args.buffer_size, envs.single_observation_space, seed=seeds["replay"])
        if checkpoint:
            state, envs = restore_checkpoint(checkpoint, args, modules, envs, rb, seeds)
        else:
            state = State(np.random.default_rng(seeds["explore"]), args.learning_starts,
                          next_log=min(args.log_interval, args.total_timesteps // 20 or 1),  # a first line early
                          **start_episodes(envs, seeds["envs"]))
        run_dir = os.path.dirname(args.resume) if checkpoint else make_run_dir(args)
        metrics_file = cleanup.enter_context(open(os.path.join(run_dir, "metrics.csv"), "a", newline=""))
        metrics_file.truncate(state.metrics_bytes)  # drop the rows written after the checkpoint
        metrics_file.seek(0, os.SEEK_END)  # (truncate leaves the position where it was)
        metrics = csv.writer(metrics_file)
        if not checkpoint:
            metrics.writerow(["step", "time_s", "episode", "return", "length", "epsilon", "loss"])
        writer = cleanup.enter_context(tensorboard_writer(run_dir)) if args.tensorboard else None
        stop = cleanup.enter_context(stop_signals())  # Ctrl-C, SIGTERM: finish the step, checkpoint, stop
        checkpoint_path = os.path.join(run_dir, "checkpoint.pt")
        say(describe(args, device, run_dir))
        clock = time.time() - state.train_seconds  # training time, over every segment of the run
        log_time, log_step = time.time(), state.global_step
        decay_steps = int(args.exploration_fraction * args.total_timesteps)  # of epsilon, from start_e to end_e

        while state.global_step < args.total_timesteps:
            # Act: epsilon-greedy in every env at once.
            epsilon = linear_schedule(args.start_e, args.end_e, decay_steps, state.global_step)
            actions = select_action(q_network, state.obs, epsilon, state.explore_rng, device)
            next_obs, rewards, terminated, truncated, _ = envs.step(actions)

            # Store real transitions only: on a reset step, obs is the last episode's final
            # observation and next_obs the new episode's first, which no action connects.
            # next_obs of a truncated step is the true final observation (NEXT_STEP autoreset).
            real = ~state.autoreset
            rb.add(*n_step_transitions(state.windows, real, state.obs, actions, rewards, next_obs, terminated,
                                       truncated, args.n_step, args.gamma))
            state.running_return[real] += rewards[real]
            state.running_length[real] += 1
            prev_step = state.global_step
            state.global_step += int(real.sum())
            state.obs, state.autoreset = next_obs, terminated | truncated

            # Learn: `gradient_steps` updates each time global_step crosses a multiple of
            # train_frequency (with several envs, one iteration may cross more than one), at
            # a learning rate that decays linearly over the whole run (--lr-end-fraction).
            if state.global_step > state.learning_starts and rb.size >= args.batch_size:
                rounds = state.global_step // args.train_frequency - prev_step // args.train_frequency
                optimizer.lr = linear_schedule(args.learning_rate, args.lr_end_fraction * args.learning_rate,
                                               args.total_timesteps, state.global_step)
                for _ in range(rounds * args.gradient_steps):
                    state.last_loss = gradient_step(q_network, target_network, optimizer,
                                                    rb.sample(args.batch_size, device), args)
                    state.recent_losses.append(state.last_loss)
                    if not math.isfinite(state.last_loss):
                        raise TrainingDiverged(
                            f"the TD loss is {state.last_loss} at step {state.global_step}; training stopped, "
                            + (f"the last good checkpoint is {checkpoint_path}" if os.path.exists(checkpoint_path)
                               else "no checkpoint was written"))
                if state.global_step // args.target_network_frequency > prev_step // args.target_network_frequency:
                    update_target(target_network, q_network, args.tau)

            # Log: a metrics row per finished episode, a progress line every log_interval steps.
            for i in np.flatnonzero(state.autoreset):
                state.episode_returns.append(float(state.running_return[i]))
                state.episode_steps.append(state.global_step)
                metrics.writerow([state.global_step, f"{time.time() - clock:.3f}", len(state.episode_returns),
                                  state.running_return[i], state.running_length[i], f"{epsilon:.4f}",
                                  f"{state.last_loss:.5f}"])
                if writer:
                    writer.add_scalar("charts/episodic_return", state.running_return[i], state.global_step)
            state.running_return[state.autoreset], state.running_length[state.autoreset] = 0.0, 0
            if state.global_step >= state.next_log:
                state.next_log = (state.global_step // args.log_interval + 1) * args.log_interval
                mean_loss = float(np.mean(state.recent_losses)) if state.recent_losses else float("nan")
                if state.recent_losses:  # learning has started
                    state.losses.append((state.global_step, mean_loss))
                state.recent_losses = []
                sps = (state.global_step - log_step) / max(time.time() - log_time, 1e-9)  # since the last line
                log_time, log_step = time.time(), state.global_step
                say(f"step {state.global_step:>8}  episodes {len(state.episode_returns):>5}  return(last 20) "
                    f"{np.mean(state.episode_returns[-20:]) if state.episode_returns else float('nan'):8.1f}  "
                    f"epsilon {epsilon:.3f}  loss {mean_loss:.4f}  {sps:6.0f} steps/s  "
                    f"~{max(args.total_timesteps - state.global_step, 0) / sps:4.0f} s left", flush=True)
                if writer:
                    writer.add_scalar("losses/td_loss", mean_loss, state.global_step)
                    writer.add_scalar("charts/epsilon", epsilon, state.global_step)

            if stop or (args.checkpoint_every and
                        state.global_step // args.checkpoint_every > prev_step // args.checkpoint_every):
                metrics_file.flush()
                state.train_seconds, state.metrics_bytes = time.time() - clock, metrics_file.tell()
                save_checkpoint(checkpoint_path, args, state, modules, envs, rb)
            if stop:
                break
        state.train_seconds = time.time() - clock

    results = Results(args, q_network, state.episode_returns, state.episode_steps, state.losses, eval_returns=[],
                      replay_buffer=rb, output_dir=run_dir, stopped_by=stop[0] if stop else 0)
    if stop:
        say(f"stopped at step {state.global_step} by {signal.Signals(stop[0]).name}; checkpoint: {checkpoint_path}\n"
            f"resume with: python {os.path.basename(__file__)} --resume {checkpoint_path}", flush=True)
        return results
    if args.save_model:  # before the evaluation, which a Ctrl-C may cut
        torch.save({"q_network": q_network.state_dict(), "args": dataclasses.asdict(args)},
                   os.path.join(run_dir, "model.pt"))
    try:
        results.eval_returns = evaluate(q_network, args, device, os.path.join(run_dir, "videos") if args.capture_video
                                        else "", say=say)
    except KeyboardInterrupt:
        if args.save_model:
            say(f"evaluation interrupted; the trained network is in {run_dir}/model.pt")
        raise
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump({"args": dataclasses.asdict(args), "train_seconds": state.train_seconds,
                   "eval_returns": results.eval_returns, "episodes": len(state.episode_returns)}, f, indent=1)
    say(f"results in {run_dir}")
    return results


# ----------------------------------------------------------------------------
# Set-up, output directory, command line


def setup(args: Args) -> torch.device:
    """Check the args, the device and the optional packages before anything is written."""
    check_args(args)
    try:
        device = torch.device(args.device)
        torch.zeros(1, device=device)
    except (RuntimeError, AssertionError) as e:  # not a device name, or one this torch cannot use
        raise UsageError(f"--device {args.device}: {str(e).splitlines()[0]} (use --device cpu)") from None
    for flag, module in [("capture_video", "moviepy"), ("tensorboard", "tensorboard")]:
        if getattr(args, flag) and importlib.util.find_spec(module) is None:
            raise UsageError(f"--{flag.replace('_', '-')} needs the {module} package: pip install {module}")
    if args.watch and sys.platform == "linux" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UsageError("--watch needs a display; --capture-video records the episodes instead")
    return device


def make_run_dir(args: Args) -> str:
    """output_dir/<env>__<seed>__<date-time>, created once every check has passed."""
    name = f"{args.env_id.replace('/', '-').replace(':', '-')}__{args.seed}__{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, n = os.path.join(args.output_dir, name), 1
    while os.path.exists(run_dir):  # two runs started in the same second
        run_dir, n = os.path.join(args.output_dir, f"{name}-{n}"), n + 1
    try:
        os.makedirs(run_dir)
    except OSError as e:
        raise UsageError(f"cannot create the output directory {run_dir!r}: {e.strerror}") from None
    return run_dir


@contextlib.contextmanager
def tensorboard_writer(run_dir: str):
    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(run_dir)
    try:
        yield writer
    finally:
        writer.close()


def describe(args: Args, device: torch.device, run_dir: str) -> str:
    """The run's first lines: env, device, the settings that differ from Args' defaults, the output."""
    flag = lambda k, v: (f"--{'' if v else 'no-'}{k}" if isinstance(v, bool)  # noqa: E731
                         else f"--{k} {' '.join(map(str, v)) if isinstance(v, tuple) else v}")
    changed = [flag(k.replace("_", "-"), v) for k, v in dataclasses.asdict(args).items()
               if k not in ("env_id", "seed", "output_dir", "resume") and v != getattr(Args, k)]
    return (f"{args.env_id}, seed {args.seed}, on {device}; settings other than the defaults: "
            f"{' '.join(changed) or 'none'}\noutput: {run_dir}")


def evaluate_saved(args: Args) -> list:
    """--eval-only: the model.pt of a run, evaluated with the settings it was trained with
    (and this command's evaluation flags)."""
    path = os.path.join(args.eval_only, "model.pt") if os.path.isdir(args.eval_only) else args.eval_only
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        trained = Args(**saved["args"])
    except Exception:
        raise UsageError(f"--eval-only {args.eval_only}: no model.pt written by this program there") from None
    flags = [k for k in vars(args) if k.startswith("eval_") or k in ("watch", "capture_video", "device")]
    args = dataclasses.replace(trained, **{k: getattr(args, k) for k in flags})
    device = setup(args)
    envs = make_env(args, 1)
    q_network = make_network(args, envs, device)
    envs.close()
    q_network.load_state_dict(saved["q_network"])
    video_dir = os.path.join(os.path.dirname(path), "videos") if args.capture_video else ""
    return evaluate(q_network, args, device, video_dir)


def parse_args(argv=None) -> Args:
    """The command line, on top of the PRESETS entry of the env it names (so that `--help` shows
    that env's values). A bad flag or value is one line, exit code 2."""
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    first.add_argument("--env-id", "--env_id", default=Args.env_id)
    env_id = first.parse_known_args(argv)[0].env_id
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return tyro.cli(Args, default=preset_args(env_id), args=argv)
    except SystemExit as e:
        if e.code:  # tyro draws a box: keep the message between its title and the next rule
            lines = [line.strip(" │╭╮╰╯") for line in errors.getvalue().splitlines()[1:]]
            rule = lambda line: set(line) <= set("─-")  # noqa: E731
            message = " ".join(itertools.takewhile(lambda ln: not rule(ln), itertools.dropwhile(rule, lines)))
            raise UsageError(message.replace(" .", ".") or "bad command line: see --help") from None
        raise


def main() -> None:
    try:
        args = parse_args()
        if args.eval_only:
            evaluate_saved(args)
            return
        results = train(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    if results.stopped_by:  # a checkpoint was written
        sys.exit(128 + results.stopped_by)


if __name__ == "__main__":
    main()
