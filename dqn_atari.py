"""DQN from Atari pixels: what pixels add to dqn.py, which must stand beside this file.

Here s is the stack of the last 4 preprocessed frames (84x84 grayscale) and Q the Nature
paper's convolutional net (Mnih et al. 2015). This file holds only what Atari changes: the
paper's settings, make_env (ale-py's AtariVectorEnv), the learning signal (lost lives, clipped
rewards), the CNN, and a replay buffer that stores each frame once; the rest is dqn.py's.

    python dqn_atari.py --env-id BreakoutNoFrameskip-v4   # the paper's settings; --help: every flag
    python dqn_atari.py --env-id ALE/Pong-v5 --preset atari100k   # DrQ(epsilon)'s, 100k steps
    python dqn_atari.py --eval-only runs/<run>            # evaluate a trained network again
"""

import dataclasses
import functools
import math
import os
import sys
from typing import ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from ale_py.vector_env import AtariVectorEnv  # importing ale_py registers the ALE ids

import dqn


@dataclasses.dataclass
class Args(dqn.Args):
    """The Nature paper's settings (Mnih et al. 2015: Extended Data Table 1 and its evaluation, in
    env steps, as DeepMind's code counts them) where they differ from dqn.py's (docs/atari.md)."""
    env_id: str = "BreakoutNoFrameskip-v4"  # ALE/Breakout-v5 gets the same preprocessing
    total_timesteps: int = 12_500_000  # env steps (4 frames each: 50M), summed over all envs
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"  # rmsprop: the paper's (make_optimizer)
    learning_rate: float = 2.5e-4  # the optimizer's learning rate
    batch_size: int = 32  # transitions per gradient update
    buffer_size: int = 1_000_000  # replay capacity in env steps (1M: 7.1 GB, each frame once)
    learning_starts: int = 50_000  # env steps collected before the first gradient update
    target_network_frequency: int = 10_000  # env steps between two target-network updates
    hidden_sizes: tuple[int, ...] = (512,)  # widths of the hidden layers after the CNN
    end_e: float = 0.1  # epsilon after the decay
    exploration_fraction: float = 0.08  # of total_timesteps, over which epsilon decays (1M steps)
    eval_episodes: int = 30  # games played by the trained network
    eval_epsilon: float = 0.05  # epsilon of the evaluation policy
    eval_max_steps: int = 4_500  # evaluation games are cut short here (5 minutes, 18k frames)
    log_interval: int = 10_000  # env steps between two progress lines
    device: str = "cuda" if torch.cuda.is_available() else "cpu"  # torch device
    torch_threads: int = os.cpu_count() or 1  # CPU threads for torch; 1 when runs share cores
    checkpoint_every: int = 100_000  # env steps between checkpoints (0: none); also on Ctrl-C

    # Preprocessing (Mnih et al. 2015; Machado et al. 2018 for sticky actions), and the rest
    noop_max: int = 30  # at most this many no-op frames at the start of a game (a random start)
    frame_skip: int = 4  # frames per env step, the action repeated; the max of the last 2 is seen
    frame_size: int = 84  # observed frames are frame_size x frame_size grayscale
    frame_stack: int = 4  # frames stacked into one observation, the newest last
    episodic_life: bool = True  # a lost life ends the episode for learning (returns: whole games)
    fire_reset: bool = True  # press FIRE when a game starts (not after a lost life), if it needs it
    clip_rewards: bool = True  # learn from sign(reward); returns are reported unclipped
    repeat_action_probability: float = 0.0  # sticky actions: chance to repeat the last action
    max_episode_frames: int = 108_000  # a game is truncated after this many frames (30 minutes)
    random_shift: int = 0  # move sampled frames up to this many pixels (DrQ's augmentation)
    bf16: bool = False  # the network computes in bfloat16 (weights and Q-values stay float32)
    OLDER_FILES: ClassVar[dict] = dict(optimizer="adam")  # before --optimizer, runs took Adam

    def __post_init__(self):  # a value out of range raises ValueError, which tyro reports
        dqn.check_args(self, RANGES)
        if self.bf16 and self.device == "cpu" and not bf16_instructions():
            print("--bf16: this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX), where it "
                  "would be about 10x slower: the network computes in float32", file=sys.stderr)
            self.bf16 = False


def bf16_instructions() -> bool:  # (torch's checks are private: one that is gone reads as no)
    checks = ["_is_avx512_bf16_supported", "_is_amx_tile_supported"]
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


RANGES = {**dqn.RANGES, "frame_skip": (1, math.inf), "frame_stack": (1, math.inf),
          "frame_size": (36, math.inf),  # the smallest frame the Nature CNN takes
          "repeat_action_probability": (0, 1), "max_episode_frames": (1, math.inf)}
# --preset atari100k: 100k env steps (400k frames), DrQ(epsilon)'s settings (Agarwal et al. 2021)
PRESETS = {"atari100k": dict(
    total_timesteps=100_000, buffer_size=100_000, learning_starts=1_600, train_frequency=1,
    target_network_frequency=1, n_step=10, dueling=True, optimizer="adam", learning_rate=1e-4,
    adam_eps=1.5e-4, end_e=0.01, exploration_fraction=0.066, random_shift=4, eval_epsilon=0.001,
    eval_max_steps=27_000, log_interval=5_000, checkpoint_every=25_000)}


def make_env(args: Args, num_envs: int, evaluation: bool = False) -> gym.vector.VectorEnv:
    """`num_envs` copies of an Atari game with the DQN preprocessing, done in C++ by ale-py.

    Observations are (frame_stack, frame_size, frame_size) uint8, the newest frame last, a new
    game's stack zero-padded. Only the game is taken from the id (ALE/Breakout-v5 gets no built-in
    frame skip or sticky actions); another id must give such stacks (the tests' synthetic env)."""
    spec = dqn.atari_spec(args.env_id)  # None: not an id of ale-py's
    if spec:
        envs = AtariVectorEnv(
            spec.kwargs["game"], num_envs, frameskip=args.frame_skip, maxpool=True,
            grayscale=True, img_height=args.frame_size, img_width=args.frame_size,
            stack_num=args.frame_stack, noop_max=args.noop_max,
            use_fire_reset=args.fire_reset, reward_clipping=False,
            episodic_life=False,  # True would restart the whole game at a lost life
            repeat_action_probability=args.repeat_action_probability,
            max_num_frames_per_episode=args.max_episode_frames,
            autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    else:  # yours (a module:Id too), through dqn.py's checks (videos: LearningSignal.render)
        envs = dqn.make_env(args, num_envs)
        space = envs.single_observation_space  # stacks of frames, as the Atari envs give
        if not (space.dtype == np.uint8 and len(space.shape) == 3 and min(space.shape[1:]) >= 36):
            envs.close()
            raise dqn.UsageError(f"{args.env_id} is not an Atari env (ALE/<Game>-v5) nor one of "
                                 f"uint8 frame stacks ({space}): use dqn.py")
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    learning = not evaluation
    return LearningSignal(envs, args.episodic_life and learning, args.clip_rewards and learning)


class LearningSignal(gym.vector.VectorWrapper):
    """What the agent learns from: a lost life is terminal and rewards are clipped to their sign.
    The game goes on: RecordEpisodeStatistics, beneath, reports whole games with real scores."""

    def __init__(self, envs, episodic_life: bool, clip_rewards: bool):
        super().__init__(envs)
        self.episodic_life, self.clip_rewards = episodic_life, clip_rewards

    def reset(self, **kwargs):
        self.obs, info = self.env.reset(**kwargs)
        self.lives = info.get("lives")  # None in games without lives
        return self.obs, info

    def step(self, actions):
        self.obs, rewards, terminated, truncated, info = self.env.step(actions)
        if self.episodic_life and self.lives is not None:
            terminated = terminated | (info["lives"] < self.lives)
            self.lives = info["lives"]
        rewards = np.sign(rewards) if self.clip_rewards else rewards
        return self.obs, rewards, terminated, truncated, info

    def render(self) -> list:  # what the agent sees: the newest frames, as RGB
        return list(np.repeat(self.obs[:, -1, :, :, None], 3, axis=-1))


class QNetwork(nn.Module):
    """The Nature CNN, then dqn.py's MLP head (--hidden-sizes 512):
    (batch, stack, height, width) uint8 frames -> (batch, n_actions)."""

    def __init__(self, obs_space: gym.Space, n_actions: int, args: Args):
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
        self.head = dqn.QNetwork(gym.spaces.Box(-np.inf, np.inf, (flat_size,)), n_actions, args)
        self.bf16 = args.bf16
        # channels_last weights: an update measured faster on the CPU (benchmarks/atari_speed.py)
        self.to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() / 255.0  # (batch, stack, height, width) in [0, 1]
        with torch.autocast(obs.device.type, torch.bfloat16, enabled=self.bf16):
            q = self.head(self.conv(x))
        return q.float()  # (batch, n_actions)


class ReplayBuffer:
    """Ring buffer of env steps that stores each frame once (as Dopamine does).

    Storing (obs, next_obs) stacks of 4 would hold each frame 8 times: 1M transitions would take
    56 GB. Here each env step stores its newest frame, and the stacks are rebuilt when sampling:
    1M steps take 1M x 84 x 84 bytes = 7.06 GB.

    Every env step takes one slot per env, so the envs' rings advance together: slot p of env
    e holds the frame observed after step p, with the action, reward and terminal flag that
    led to it, or, on a reset step, a new episode's first frame (`first`, no transition). A
    stack ending at slot p is slots p-3..p with the frames from before the episode's first
    slot zeroed, as the env pads a new episode's stacks. So a stack never mixes two episodes,
    and a truncated step's next stack ends with its true final frame.

    An n-step transition from slot s sums the discounted rewards of slots s..s+n-1 and
    bootstraps from the stack ending at s+n-1: it stops at a terminal, never crosses a truncation.
    """

    def __init__(self, obs_space: gym.Space, args: Args, seed: int):
        self.stack, *frame_shape = obs_space.shape
        num_envs, self.n_step, self.gamma = args.num_envs, args.n_step, args.gamma
        self.num_envs, self.shift = num_envs, args.random_shift  # shift: see random_shift()
        self.slots = args.buffer_size // num_envs  # ring length, per env
        if self.slots <= self.stack + self.n_step:
            raise dqn.UsageError(f"--buffer-size {args.buffer_size} holds {self.slots} steps per "
                                 "env: it needs more than --frame-stack + --n-step")
        frame_bytes = int(np.prod(frame_shape))
        dqn.check_memory(self.slots * num_envs * (frame_bytes + 17), "--buffer-size")
        self.frames = np.zeros((self.slots, num_envs, *frame_shape), dtype=obs_space.dtype)
        self.actions = np.zeros((self.slots, num_envs), dtype=np.int64)
        self.rewards = np.zeros((self.slots, num_envs), dtype=np.float32)
        self.terminated = np.zeros((self.slots, num_envs), dtype=np.float32)
        self.first = np.zeros((self.slots, num_envs), dtype=bool)
        self.pos, self.size = 0, 0  # the slot written next; slots written (<= self.slots)
        self.new_episodes = True  # the next add() starts episodes (as after a resume: not saved)
        self.rng = np.random.default_rng(seed)

    def add(self, obs, actions, rewards, next_obs, terminated, truncated, reset) -> None:
        """One env step of every env: its newest frame, and the transition that led to it, or
        reset[i]: env i's step was an autoreset, its frame the first of a new episode."""
        if self.new_episodes:
            self.store(obs[:, -1], 0, 0, 0, first=True)
            self.new_episodes = False
        self.store(next_obs[:, -1], actions, rewards, terminated, first=reset)

    def store(self, frames, actions, rewards, terminated, first) -> None:
        """One slot of every env: frames (num_envs, height, width) and what led to them."""
        p = self.pos
        self.frames[p], self.actions[p], self.rewards[p] = frames, actions, rewards
        self.terminated[p], self.first[p] = terminated, first
        self.pos, self.size = (p + 1) % self.slots, min(self.size + 1, self.slots)

    def sample(self, batch_size: int, device: torch.device):
        """A uniform batch of (obs, actions, returns, next_obs, terminated), stacks rebuilt."""
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
            ok &= (s - self.pos) % self.slots >= self.stack
            ok &= (self.pos - 1 - s) % self.slots >= n - 1
            slot, env = np.concatenate([slot, s[ok]]), np.concatenate([env, e[ok]])
            if len(slot) >= batch_size:
                break
        else:
            raise dqn.UsageError("the replay buffer holds (almost) no complete transitions: "
                                 "do episodes end before --n-step steps?")
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
        if self.shift:  # --random-shift
            obs, next_obs = self.random_shift(obs), self.random_shift(next_obs)
        steps = window[:, self.stack:]
        alive = np.cumprod(1 - self.terminated[steps, env[:, None]], axis=1)  # 0 from a terminal
        alive_before = np.concatenate([np.ones((batch_size, 1)), alive[:, :-1]], axis=1)
        discounts = alive_before * self.gamma ** np.arange(n)
        rewards = (self.rewards[steps, env[:, None]] * discounts).sum(1).astype(np.float32)
        arrays = (self.actions[slot, env], rewards, 1 - alive[:, -1])
        actions, rewards, terminated = (to_device(a, device) for a in arrays)
        return obs, actions, rewards, next_obs, terminated

    def random_shift(self, stacks: torch.Tensor) -> torch.Tensor:
        """DrQ's augmentation: each stack moved up to self.shift pixels each way, edges repeated."""
        batch, stack, height, width = stacks.shape
        shifts = self.rng.integers(-self.shift, self.shift + 1, size=(2, batch, 1))
        shifts = torch.as_tensor(shifts, device=stacks.device)
        rows = (torch.arange(height, device=stacks.device) + shifts[0]).clamp(0, height - 1)
        cols = (torch.arange(width, device=stacks.device) + shifts[1]).clamp(0, width - 1)
        stacks = stacks.gather(2, rows[:, None, :, None].expand(-1, stack, -1, width))
        return stacks.gather(3, cols[:, None, None, :].expand(-1, stack, height, -1))


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A sampled array as a tensor on `device` (to CUDA through pinned memory, not waiting)."""
    tensor, cuda = torch.from_numpy(np.ascontiguousarray(array)), device.type == "cuda"
    return (tensor.pin_memory() if cuda else tensor).to(device, non_blocking=cuda)


def make_optimizer(params, args: Args, device: torch.device) -> torch.optim.Optimizer:
    """Adam (dqn.py's), or the paper's centred RMSProp as close as torch's comes (docs/atari.md):
    its eps, 0.01 inside the root for a batch's summed gradient, is 0.1 / batch after the root."""
    if args.optimizer == "adam":
        return dqn.make_optimizer(params, args, device)
    return torch.optim.RMSprop(params, args.learning_rate, alpha=0.95, eps=0.1 / args.batch_size,
                               centered=True)


PARTS = dict(make_env=make_env, QNetwork=QNetwork, ReplayBuffer=ReplayBuffer,
             make_optimizer=make_optimizer)  # for dqn.py
train = functools.partial(dqn.train, **PARTS)  # train(args, verbose=True) -> dqn.Results
main = functools.partial(dqn.main, Args, PRESETS, named=True, **PARTS)  # python dqn_atari.py


if __name__ == "__main__":
    main()
