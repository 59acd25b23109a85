"""Deep Q-Network (DQN) from Atari pixels, in one file: the Nature DQN, sibling of dqn.py.

DQN (Mnih et al. 2015, "Human-level control through deep reinforcement learning")
learns Q(s, a), the expected discounted return of taking action a in state s, by
regressing it towards the Bellman target r + gamma * max_a' Q_target(s', a'), on
transitions replayed uniformly from a buffer of past experience. Here s is the stack
of the last 4 preprocessed frames (84x84 grayscale) and Q a convolutional net.

    pip install -r requirements.txt
    python dqn_atari.py --env-id BreakoutNoFrameskip-v4   # --help lists every flag
    python dqn_atari.py --eval-only runs/<run>            # evaluate a trained network

The defaults are the Nature paper's (as CleanRL's dqn_atari.py has them: Adam, 10M
steps, a 1M-step buffer), with the Huber loss and one-step targets; --n-step and
--double-q add what dqn.py's presets use, and --bf16 runs the network in bfloat16 (faster
on CPUs with AVX-512 BF16 and on GPUs). Where this file differs from dqn.py, it is
because of pixels: the Atari settings, make_env, the CNN, the replay buffer that stores
each frame once, lost lives, reward clipping and the evaluation epsilon; and torch's fused
Adam, faster than dqn.py's written-out one on the CNN's 1.7M weights.

Sections, in reading order: Args, make_env, QNetwork, ReplayBuffer, linear_schedule and
select_action, td_target and td_loss, update_target, evaluate, the loop state and its
checkpoint, train (act, store, learn, log), main.
"""

import argparse
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
from ale_py.vector_env import AtariVectorEnv  # importing ale_py registers the ALE ids


# ----------------------------------------------------------------------------
# Settings


@dataclass
class Args:
    # Environment
    env_id: str = "BreakoutNoFrameskip-v4"  # an ALE id (ALE/Breakout-v5 or BreakoutNoFrameskip-v4: the same preprocessing)
    seed: int = 1  # seeds network init, exploration, replay sampling and the envs
    total_timesteps: int = 10_000_000  # env steps (4 frames each) to train for, summed over all envs
    num_envs: int = 1  # envs stepped in lockstep, acting from one batched forward pass

    # Atari preprocessing (Mnih et al. 2015; Machado et al. 2018 for sticky actions)
    noop_max: int = 30  # at most this many no-op frames at the start of a game (a random start)
    frame_skip: int = 4  # frames per env step, the action repeated; the max of the last two is observed
    frame_size: int = 84  # observed frames are frame_size x frame_size grayscale
    frame_stack: int = 4  # frames stacked into one observation, the newest last
    episodic_life: bool = True  # a lost life ends the episode for learning only; returns are whole games
    fire_reset: bool = True  # press FIRE when a game starts, in games that need it (Breakout)
    clip_rewards: bool = True  # learn from sign(reward); returns are reported unclipped
    repeat_action_probability: float = 0.0  # sticky actions: chance of repeating the last action (0.25 in v5)
    max_episode_frames: int = 108_000  # a game is truncated after this many frames (30 minutes)

    # Learning
    learning_rate: float = 1e-4  # Adam learning rate
    gamma: float = 0.99  # discount factor of future rewards
    batch_size: int = 32  # transitions per gradient update
    buffer_size: int = 1_000_000  # replay capacity in env steps (7.1 GB for 1M); the oldest are overwritten first
    learning_starts: int = 80_000  # env steps collected before the first gradient update
    train_frequency: int = 4  # env steps between two rounds of gradient updates
    gradient_steps: int = 1  # gradient updates per round
    target_network_frequency: int = 1_000  # env steps between two target-network updates
    tau: float = 1.0  # target update: 1.0 copies the online net, < 1 moves this fraction towards it
    n_step: int = 1  # the target sums n discounted rewards, then bootstraps n steps later
    double_q: bool = False  # Double DQN: the online net picks a', the target net values it
    loss: Literal["huber", "mse"] = "huber"  # TD loss: huber is the Nature paper's error clipping
    max_grad_norm: float = 0.0  # clip the gradient's global norm to this value; 0 turns clipping off

    # Exploration
    start_e: float = 1.0  # epsilon (probability of a random action) at step 0
    end_e: float = 0.01  # epsilon after the decay
    exploration_fraction: float = 0.10  # fraction of total_timesteps over which epsilon decays linearly

    # Evaluation, output, machine
    eval_episodes: int = 10  # whole games on a separate env after training
    eval_epsilon: float = 0.05  # epsilon of the evaluation policy (0.05 in the Nature paper)
    eval_max_steps: int = 27_000  # evaluation games are cut short here (the 108k-frame limit)
    eval_only: str = ""  # evaluate the model.pt of this run directory (or file); no training
    watch: bool = False  # show the evaluation games in a window (needs a display)
    capture_video: bool = False  # record the evaluation games, as the agent sees them, to mp4 (needs moviepy)
    log_interval: int = 10_000  # env steps between two progress lines
    output_dir: str = "runs"  # runs write to output_dir/<env>__<seed>__<date-time>/
    save_model: bool = True  # save the trained Q-network and these args to model.pt
    tensorboard: bool = False  # also log to TensorBoard (needs tensorboard)
    device: str = "cuda" if torch.cuda.is_available() else "cpu"  # torch device (cpu, cuda, cuda:1, mps)
    torch_threads: int = os.cpu_count() or 1  # CPU threads for torch; 1 when several runs share the cores
    bf16: bool = False  # the network computes in bfloat16: faster on CPUs with AVX-512 BF16 or AMX, and on GPUs

    # Checkpoints
    checkpoint_every: int = 100_000  # env steps between checkpoints (0: none); Ctrl-C and SIGTERM write one
    checkpoint_buffer: bool = False  # also save the buffer (ALE's C++ envs do not pickle: new games start)
    resume: str = ""  # go on with the run in this checkpoint (or run directory), with its own args


# Per-game settings: what each game changes in Args. The Nature paper used one set for every game.
PRESETS = {}


def preset_args(env_id: str, **overrides) -> Args:
    """Args for env_id: the defaults, then the env's PRESETS entry, then `overrides`."""
    return Args(**{**PRESETS.get(env_id, {}), "env_id": env_id, **overrides})


class UsageError(Exception):
    """Bad input (a flag, an env, a file): reported as one line, exit code 2."""


RANGES = [  # (field, lowest, highest) of every numeric setting
    ("seed", 0, math.inf), ("total_timesteps", 1, math.inf), ("num_envs", 1, math.inf),
    ("noop_max", 0, math.inf), ("frame_skip", 1, math.inf), ("frame_size", 36, math.inf),  # 36: the CNN's field
    ("frame_stack", 1, math.inf), ("repeat_action_probability", 0, 1), ("max_episode_frames", 1, math.inf),
    ("learning_rate", 0, math.inf), ("gamma", 0, 1), ("batch_size", 1, math.inf), ("buffer_size", 1, math.inf),
    ("learning_starts", 0, math.inf), ("train_frequency", 1, math.inf), ("gradient_steps", 1, math.inf),
    ("target_network_frequency", 1, math.inf), ("tau", 0, 1), ("n_step", 1, math.inf),
    ("max_grad_norm", 0, math.inf), ("start_e", 0, 1), ("end_e", 0, 1), ("eval_epsilon", 0, 1),
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
    """A vector env of `num_envs` copies of an Atari game with the DQN preprocessing.

    Observations are (frame_stack, frame_size, frame_size) uint8, the newest frame last;
    a new game's stack is zero-padded. Rewards are the game's, unclipped, and `terminated`
    means game over: train() clips rewards and turns lost lives into terminals itself
    (from info["lives"]), so that returns stay whole games.

    Both id styles get the same preprocessing: only the game is taken from the id, so
    ALE/Breakout-v5 has no built-in frame skip or sticky actions here (see Args).
    ale-py's AtariVectorEnv does it all in C++ (measured faster than gymnasium's
    AtariPreprocessing + FrameStackObservation: benchmarks/atari_speed.py).
    An id that is not an ALE id must be an env that already gives such frame stacks
    (the tests train on a synthetic one); it is used as it is.

    gymnasium 1.x vector envs auto-reset on the NEXT step: the step that ends an episode
    returns its true final observation, and the following step ignores the action and
    returns the first observation of a new episode (reward 0). That reset step is not a
    transition; train() never stores it as one.
    """
    env_id = args.env_id
    try:
        spec = gym.spec(env_id)
        if spec.entry_point == "ale_py.env:AtariEnv":
            envs = AtariVectorEnv(
                spec.kwargs["game"], num_envs, frameskip=args.frame_skip, maxpool=True,
                grayscale=True, img_height=args.frame_size, img_width=args.frame_size,
                stack_num=args.frame_stack, noop_max=args.noop_max, use_fire_reset=args.fire_reset,
                episodic_life=False,  # True would restart the whole game at a lost life
                reward_clipping=False, repeat_action_probability=args.repeat_action_probability,
                max_num_frames_per_episode=args.max_episode_frames,
                autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
        else:
            envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
    except gym.error.Error as e:  # unknown id or game, missing package
        raise UsageError(f"cannot make env {env_id!r}: {str(e).splitlines()[0]}") from None
    space = envs.single_observation_space
    error = (f"{env_id} is not an Atari env (ALE/<Game>-v5 or <Game>NoFrameskip-v4) and its observations "
             f"(shape {space.shape}) are not uint8 frame stacks: use dqn.py"
             if not (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
                     and min(space.shape[1:]) >= 36)
             else f"DQN needs a Discrete action space, {env_id} has {envs.single_action_space}"
             if not isinstance(envs.single_action_space, gym.spaces.Discrete) else "")
    if error:
        envs.close()
        raise UsageError(error)
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    return envs


# ----------------------------------------------------------------------------
# Q-network


class QNetwork(nn.Module):
    """The Nature CNN: (batch, stack, height, width) uint8 frames -> (batch, n_actions)."""

    def __init__(self, obs_space: gym.Space, n_actions: int, bf16: bool = False):
        super().__init__()
        stack, height, width = obs_space.shape
        self.conv = nn.Sequential(
            nn.Conv2d(stack, 32, kernel_size=8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():  # 64 * 7 * 7 = 3136 for 84x84 frames
            flat_size = self.conv(torch.zeros(1, stack, height, width)).shape[1]
        self.head = nn.Sequential(nn.Linear(flat_size, 512), nn.ReLU(), nn.Linear(512, n_actions))
        self.n_actions = n_actions
        self.bf16 = bf16  # compute in bfloat16; weights, gradients and Q-values stay float32

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() / 255.0  # (batch, stack, height, width) in [0, 1]
        with torch.autocast(obs.device.type, torch.bfloat16, enabled=self.bf16):
            q = self.head(self.conv(x))
        return q.float()  # (batch, n_actions)


def make_network(args: Args, envs, device: torch.device) -> QNetwork:
    # Measured on 2 CPU cores (benchmarks/atari_speed.py): channels_last weights make an update faster.
    memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    return QNetwork(envs.single_observation_space, int(envs.single_action_space.n),
                    args.bf16).to(device, memory_format=memory_format)


# ----------------------------------------------------------------------------
# Replay buffer


class ReplayBuffer:
    """Ring buffer of env steps that stores each frame once (as Dopamine does).

    A stack of 4 frames shares 3 with the next one, so storing (obs, next_obs) stacks
    would hold each frame 8 times: 1M transitions would take 56 GB (28 GB with obs
    only, CleanRL's layout). Here each env step stores its newest frame, and the
    stacks are rebuilt when sampling: 1M steps take 1M x 84 x 84 bytes = 7.06 GB.

    Every env step takes one slot per env, so the envs' rings advance together:
    slot p of env e holds the frame observed after step p, with the action, reward
    and terminal flag that led to it, or, on a reset step, a new episode's first
    frame (`first`, not a transition). A stack ending at slot p is slots p-3..p with
    the frames from before the episode's first slot zeroed, exactly as the env pads
    a new episode's stacks. So a stack never mixes two episodes, and a truncated
    step's next stack ends with its true final frame.

    An n-step transition from slot s sums the discounted rewards of slots s..s+n-1 and
    bootstraps from the stack ending at s+n-1, as dqn.py's n_step_transitions stores them:
    it stops at a terminal, and is never sampled across a truncation.
    """

    def __init__(self, capacity: int, obs_space: gym.Space, num_envs: int, seed: int, n_step=1, gamma=0.99):
        self.stack, *frame_shape = obs_space.shape
        self.slots = capacity // num_envs  # ring length, per env
        if self.slots <= self.stack + n_step:
            raise UsageError(f"--buffer-size {capacity} holds {self.slots} steps per env: "
                             "it needs more than --frame-stack + --n-step")
        check_memory(self.slots * num_envs * (int(np.prod(frame_shape)) + 17), "--buffer-size")  # + a, r, term, first
        self.frames = np.zeros((self.slots, num_envs, *frame_shape), dtype=obs_space.dtype)
        self.actions = np.zeros((self.slots, num_envs), dtype=np.int64)
        self.rewards = np.zeros((self.slots, num_envs), dtype=np.float32)
        self.terminated = np.zeros((self.slots, num_envs), dtype=np.float32)
        self.first = np.zeros((self.slots, num_envs), dtype=bool)
        self.pos = 0  # the slot written next
        self.size = 0  # slots written, at most self.slots
        self.n_step, self.gamma, self.num_envs = n_step, gamma, num_envs
        self.rng = np.random.default_rng(seed)

    def add(self, frames, actions, rewards, terminated, first) -> None:
        """Store one env step of every env: its newest frame (num_envs, height, width),
        and the transition that led to it, or first=True where the step was a reset."""
        p = self.pos
        self.frames[p], self.actions[p], self.rewards[p] = frames, actions, rewards
        self.terminated[p], self.first[p] = terminated, first
        self.pos = (p + 1) % self.slots
        self.size = min(self.size + 1, self.slots)

    def sample(self, batch_size: int, device: torch.device):
        n, slot, env = self.n_step, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        for _ in range(1000):  # rejection sampling: a few % of slots start no transition
            s = self.rng.integers(0, self.size, size=batch_size)
            e = self.rng.integers(0, self.num_envs, size=batch_size)
            steps = (s[:, None] + np.arange(n)) % self.slots  # (batch, n): slots s .. s+n-1
            # ongoing[:, j]: no terminal among steps 0..j-1, so step j belongs to the transition
            ongoing = np.cumprod(1 - self.terminated[steps, e[:, None]], axis=1) == 1
            ongoing = np.concatenate([np.ones((batch_size, 1), bool), ongoing[:, :-1]], axis=1)
            # Every step of it is a transition of one episode (no reset: a truncation), its
            # first stack's slots (s-stack .. s-1) are still stored, and so is its last step.
            ok = ~(self.first[steps, e[:, None]] & ongoing).any(1)
            ok &= ((s - self.pos) % self.slots >= self.stack) & ((self.pos - 1 - s) % self.slots >= n - 1)
            slot, env = np.concatenate([slot, s[ok]]), np.concatenate([env, e[ok]])
            if len(slot) >= batch_size:
                break
        else:
            raise UsageError("the replay buffer holds (almost) no complete transitions: do episodes end "
                             "before --n-step steps?")
        slot, env = slot[:batch_size], env[:batch_size]

        window = (slot[:, None] + np.arange(-self.stack, n)) % self.slots  # (batch, stack + n)
        # keep[:, i]: frame i of the window belongs to the episode of the sampled step,
        # i.e. no episode starts after it, at or before the first stack's newest frame.
        first = self.first[window, env[:, None]]
        keep = np.ones_like(first)
        for i in range(self.stack - 2, -1, -1):
            keep[:, i] = keep[:, i + 1] & ~first[:, i + 1]
        frames = to_device(self.frames[window, env[:, None]], device)  # (batch, stack + n, h, w)
        frames = frames * to_device(keep, device)[:, :, None, None]
        obs, next_obs = frames[:, :self.stack], frames[:, n:]  # stacks ending at s-1 and s+n-1
        steps = window[:, self.stack:]
        alive = np.cumprod(1 - self.terminated[steps, env[:, None]], axis=1)  # 0 from the terminal on
        alive_before = np.concatenate([np.ones((batch_size, 1)), alive[:, :-1]], axis=1)
        rewards = (self.rewards[steps, env[:, None]] * alive_before * self.gamma ** np.arange(n)).sum(1)
        arrays = (self.actions[slot, env], rewards.astype(np.float32), 1 - alive[:, -1])
        actions, rewards, terminated = (to_device(a, device) for a in arrays)
        return obs, actions, rewards, next_obs, terminated


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A sampled array as a tensor on `device`. To a GPU it goes through pinned (page-locked)
    memory, without waiting for the copy: the CPU samples on while it travels."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tensor


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
    """Returns of args.eval_episodes whole games (unclipped, lives ignored) of the epsilon-greedy
    policy (args.eval_epsilon), each cut short after args.eval_max_steps steps; the frames the
    agent saw are recorded to video_dir, or shown with --watch."""
    env = make_env(args, 1)
    seed = run_seeds(args.seed)["eval"]
    rng, returns, cut = np.random.default_rng(seed), [], 0
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=seed + episode)
        episode_return, done, steps, frames = 0.0, False, 0, [obs[0, -1]]
        while not done and steps < args.eval_max_steps:
            obs, reward, terminated, truncated, _ = env.step(select_action(q_network, obs, args.eval_epsilon, rng, device))
            episode_return, done, steps = episode_return + float(reward[0]), terminated[0] or truncated[0], steps + 1
            frames.append(obs[0, -1])
            if args.watch:
                show(frames[-1])
        returns.append(episode_return)
        cut += not done
        if video_dir:
            from moviepy.video.io.ImageSequenceClip import ImageSequenceClip
            os.makedirs(video_dir, exist_ok=True)
            ImageSequenceClip([np.stack([f] * 3, axis=-1) for f in frames], fps=15).write_videofile(
                os.path.join(video_dir, f"eval-episode-{episode}.mp4"), logger=None)
    env.close()
    if cut:
        say(f"{cut} of {len(returns)} evaluation games were cut short at --eval-max-steps {args.eval_max_steps}")
    if returns:
        say(f"evaluation (epsilon {args.eval_epsilon}) over {len(returns)} games: "
            f"{np.mean(returns):.1f} +- {np.std(returns):.1f}")
    return returns


def show(frame: np.ndarray) -> None:
    """Draw a grayscale frame in a window, 4x enlarged (--watch)."""
    import pygame
    screen = pygame.display.get_surface() or pygame.display.set_mode((4 * frame.shape[1], 4 * frame.shape[0]))
    image = pygame.surfarray.make_surface(np.stack([frame.T] * 3, axis=-1))
    screen.blit(pygame.transform.scale(image, screen.get_size()), (0, 0))
    pygame.display.flip()
    pygame.event.pump()
    time.sleep(1 / 30)


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
    lives: np.ndarray  # per env, the lives left (None for games without lives)
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


def start_episodes(envs, seed: int, rb: ReplayBuffer) -> dict:
    """New games in every env (env i reset with seed + i), their first frames stored in the
    buffer: the State fields that start over."""
    obs, info = envs.reset(seed=seed)
    n = envs.num_envs
    rb.add(obs[:, -1], np.zeros(n), np.zeros(n), np.zeros(n), first=np.ones(n, dtype=bool))
    return dict(obs=obs, autoreset=np.zeros(n, dtype=bool), lives=info.get("lives"),
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
        vars(state).update(start_episodes(envs, seeds["envs"] + state.global_step, rb))
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
        optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, fused=device.type == "cpu")
        modules = {"q_network": q_network, "target_network": target_network, "optimizer": optimizer}
        rb = ReplayBuffer(args.buffer_size, envs.single_observation_space, args.num_envs, seeds["replay"],
                          args.n_step, args.gamma)
        if checkpoint:
            state, envs = restore_checkpoint(checkpoint, args, modules, envs, rb, seeds)
        else:
            state = State(np.random.default_rng(seeds["explore"]), args.learning_starts,
                          next_log=min(args.log_interval, args.total_timesteps // 20 or 1),  # a first line early
                          **start_episodes(envs, seeds["envs"], rb))
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
            next_obs, rewards, terminated, truncated, info = envs.step(actions)

            # Learn from a lost life as from a game over (the agent learns that dying ends
            # its rewards), but play on: the game goes on and its return stays whole.
            life_lost = np.zeros(args.num_envs, dtype=bool)
            if state.lives is not None:
                life_lost = args.episodic_life & ~state.autoreset & (info["lives"] < state.lives)
                state.lives = info["lives"]
            # Store each env's newest frame. On a reset step, obs is the last episode's final
            # observation and next_obs the new episode's first, which no action connects: its
            # frame starts an episode and is no transition. next_obs of a truncated step is
            # the true final observation (NEXT_STEP autoreset).
            real = ~state.autoreset
            rb.add(next_obs[:, -1], actions, np.sign(rewards) if args.clip_rewards else rewards,
                   terminated | life_lost, first=state.autoreset)
            state.running_return[real] += rewards[real]
            state.running_length[real] += 1
            prev_step = state.global_step
            state.global_step += int(real.sum())
            state.obs, state.autoreset = next_obs, terminated | truncated

            # Learn: `gradient_steps` updates each time global_step crosses a multiple of
            # train_frequency (with several envs, one iteration may cross more than one).
            if state.global_step > state.learning_starts and rb.size >= args.batch_size:
                rounds = state.global_step // args.train_frequency - prev_step // args.train_frequency
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
