"""Deep Q-Network (DQN) from Atari pixels, in one file: the Nature DQN, sibling of dqn.py.

DQN (Mnih et al. 2015, "Human-level control through deep reinforcement learning")
learns Q(s, a), the expected discounted return of taking action a in state s, by
regressing it towards the Bellman target r + gamma * max_a' Q_target(s', a'),
on transitions replayed uniformly from a buffer of past experience. Here s is the
stack of the last 4 preprocessed frames (84x84 grayscale) and Q a convolutional net.

    pip install -r requirements.txt
    python dqn_atari.py --env-id BreakoutNoFrameskip-v4   # `python dqn_atari.py --help` lists every flag

Sections, in reading order:
  Args              every setting, with its unit
  make_env          ale-py's AtariVectorEnv with the DQN preprocessing (auto-resets on the NEXT step)
  QNetwork          the Nature CNN, its flatten size computed from the frame size
  ReplayBuffer      each frame stored once; 4-frame stacks rebuilt when sampling
  linear_schedule   epsilon decay
  select_action     epsilon-greedy over a batch of envs
  td_loss           the Bellman / TD target and the loss
  update_target     hard copy or Polyak averaging
  evaluate          epsilon-greedy policy (0.05) on whole games, unclipped rewards
  save_checkpoint   checkpoints written atomically, for Ctrl-C, SIGTERM and --resume
  train             the loop: act, store, learn; returns its results
"""

import csv
import dataclasses
import json
import os
import pickle
import signal
import sys
import threading
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from ale_py.vector_env import AtariVectorEnv  # importing ale_py registers the ALE ids


# ----------------------------------------------------------------------------
# Args


@dataclass
class Args:
    # Environment
    env_id: str = "BreakoutNoFrameskip-v4"
    """an ALE id (ALE/Breakout-v5, BreakoutNoFrameskip-v4: both get the preprocessing below)"""
    seed: int = 1
    """seed of the run: network init, exploration, replay sampling and the envs"""
    total_timesteps: int = 10_000_000
    """length of training, in env steps (agent steps, 4 frames each), summed over all envs"""
    num_envs: int = 1
    """envs stepped in lockstep; their actions come from one batched forward pass"""

    # Atari preprocessing (Mnih et al. 2015; Machado et al. 2018 for sticky actions)
    noop_max: int = 30
    """at most this many no-op frames at the start of a game (a random start state)"""
    frame_skip: int = 4
    """frames per env step, the action repeated; the observation is the max of the last two"""
    frame_size: int = 84
    """observed frames are frame_size x frame_size grayscale"""
    frame_stack: int = 4
    """frames stacked into one observation, the newest last"""
    episodic_life: bool = True
    """a lost life ends the episode for learning only: returns are still whole games"""
    fire_reset: bool = True
    """press FIRE when a game starts, in games that need it (Breakout); not after a lost life"""
    clip_rewards: bool = True
    """learn from sign(reward); returns are reported unclipped"""
    repeat_action_probability: float = 0.0
    """sticky actions: probability of repeating the previous action per frame (0.25 in v5)"""
    max_episode_frames: int = 108_000
    """a game is truncated after this many frames (30 minutes of play)"""

    # Learning
    learning_rate: float = 1e-4
    """Adam learning rate"""
    gamma: float = 0.99
    """discount factor of future rewards"""
    batch_size: int = 32
    """transitions per gradient update"""
    buffer_size: int = 1_000_000
    """replay capacity, in env steps (about 7.1 GB for 1M); the oldest are overwritten first"""
    learning_starts: int = 80_000
    """env steps of experience collected before the first gradient update"""
    train_frequency: int = 4
    """env steps between two rounds of gradient updates"""
    gradient_steps: int = 1
    """gradient updates per round"""
    target_network_frequency: int = 1_000
    """env steps between two target-network updates"""
    tau: float = 1.0
    """target update rate: 1.0 copies the online net, < 1 is Polyak averaging"""
    loss: str = "huber"
    """huber (the Nature paper's error clipping) or mse (CleanRL's dqn_atari.py)"""
    double_q: bool = False
    """Double DQN target: the online net picks a', the target net values it (less overestimation)"""
    max_grad_norm: float = 0.0
    """clip the gradient's global norm to this value; 0 turns clipping off"""

    # Exploration
    start_e: float = 1.0
    """epsilon at step 0 (probability of a uniformly random action)"""
    end_e: float = 0.01
    """epsilon after the decay"""
    exploration_fraction: float = 0.10
    """fraction of total_timesteps over which epsilon decays linearly"""

    # Evaluation, logging, output
    eval_episodes: int = 10
    """whole games of the epsilon-greedy policy run on a separate env after training"""
    eval_epsilon: float = 0.05
    """epsilon of the evaluation policy (0.05 in the Nature paper)"""
    log_interval: int = 10_000
    """env steps between two console lines"""
    output_dir: str = "runs"
    """each run writes metrics.csv, summary.json and model.pt to output_dir/<run name>"""
    save_model: bool = True
    """save the trained Q-network and these args to model.pt"""
    tensorboard: bool = False
    """also log to TensorBoard (needs tensorboard)"""
    device: str = "auto"
    """torch device: auto is cuda when available, else cpu"""
    torch_threads: int = 0
    """CPU threads for torch; 0 uses every core. 1 is faster when several runs share the cores"""

    # Checkpoints
    checkpoint_every: int = 100_000
    """env steps between two checkpoints (<run dir>/checkpoint.pt, replaced atomically); 0 turns them off. Ctrl-C and SIGTERM always write one"""
    checkpoint_buffer: bool = False
    """also save the replay buffer (and the envs, where they pickle), so that a resumed run gives exactly the uninterrupted run's results; without it, the buffer is refilled before learning goes on"""
    resume: str | None = None
    """continue the run saved in this checkpoint file (or run directory), with the args it was started with; other flags are ignored"""


def resolve_args(args: Args) -> Args:
    """Resolve --device auto; check every value."""
    if args.device == "auto":
        args = dataclasses.replace(args, device="cuda" if torch.cuda.is_available() else "cpu")
    checks = [
        (args.total_timesteps > 0, "--total-timesteps must be positive"),
        (args.num_envs >= 1, "--num-envs must be at least 1"),
        (args.noop_max >= 0, "--noop-max must be non-negative"),
        (args.frame_skip >= 1, "--frame-skip must be at least 1"),
        (args.frame_size >= 36, "--frame-size must be at least 36 (the CNN's receptive field)"),
        (args.frame_stack >= 1, "--frame-stack must be at least 1"),
        (0 <= args.repeat_action_probability <= 1, "--repeat-action-probability must be in [0, 1]"),
        (args.max_episode_frames >= 1, "--max-episode-frames must be at least 1"),
        (args.learning_rate > 0, "--learning-rate must be positive"),
        (0 <= args.gamma <= 1, "--gamma must be in [0, 1]"),
        (args.batch_size >= 1, "--batch-size must be at least 1"),
        (args.buffer_size >= args.batch_size, "--buffer-size must be at least --batch-size"),
        (args.buffer_size // args.num_envs > args.frame_stack + 1,
         "--buffer-size must hold more than --frame-stack + 1 steps per env"),
        (0 <= args.learning_starts < args.total_timesteps,
         "--learning-starts must be in [0, --total-timesteps)"),
        (args.train_frequency >= 1, "--train-frequency must be at least 1"),
        (args.gradient_steps >= 1, "--gradient-steps must be at least 1"),
        (args.target_network_frequency >= 1, "--target-network-frequency must be at least 1"),
        (0 < args.tau <= 1, "--tau must be in (0, 1]"),
        (args.loss in ("huber", "mse"), "--loss must be huber or mse"),
        (0 <= args.end_e <= 1 and 0 <= args.start_e <= 1, "--start-e and --end-e must be in [0, 1]"),
        (0 < args.exploration_fraction <= 1, "--exploration-fraction must be in (0, 1]"),
        (0 <= args.eval_epsilon <= 1, "--eval-epsilon must be in [0, 1]"),
        (args.eval_episodes >= 0, "--eval-episodes must be non-negative"),
        (args.log_interval >= 1, "--log-interval must be at least 1"),
        (args.checkpoint_every >= 0, "--checkpoint-every must be non-negative"),
        (args.torch_threads >= 0, "--torch-threads must be non-negative"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    return args


class UsageError(Exception):
    """Bad input (a flag value, an env): reported as one line, exit code 2."""


# ----------------------------------------------------------------------------
# Environment


def make_env(env_id: str, num_envs: int, seed: int, args: Args) -> gym.vector.VectorEnv:
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

    gymnasium 1.x vector envs auto-reset on the NEXT step: the step that ends an
    episode returns its true final observation, and the following step ignores the
    action and returns the first observation of a new episode (reward 0). That
    reset step is not a transition; train() never stores it as one.
    """
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as e:  # unknown id or game name
        raise UsageError(f"unknown env id {env_id!r}: {str(e).splitlines()[0]}") from None
    if spec.entry_point == "ale_py.env:AtariEnv":
        envs = AtariVectorEnv(
            spec.kwargs["game"], num_envs, frameskip=args.frame_skip, maxpool=True,
            grayscale=True, img_height=args.frame_size, img_width=args.frame_size,
            stack_num=args.frame_stack, noop_max=args.noop_max, use_fire_reset=args.fire_reset,
            episodic_life=False,  # True would restart the whole game at a lost life
            reward_clipping=False, repeat_action_probability=args.repeat_action_probability,
            max_num_frames_per_episode=args.max_episode_frames,
            autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
        )
    else:
        try:
            envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
        except gym.error.Error as e:  # missing package (box2d, ...)
            raise UsageError(f"cannot make env {env_id!r}: {e}") from None
    check_spaces(env_id, envs.single_observation_space, envs.single_action_space)
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    envs.action_space.seed(seed)
    return envs


def check_spaces(env_id: str, obs_space: gym.Space, action_space: gym.Space) -> None:
    if not (isinstance(obs_space, gym.spaces.Box) and obs_space.dtype == np.uint8
            and len(obs_space.shape) == 3 and min(obs_space.shape[1:]) >= 36):
        raise UsageError(
            f"{env_id} is not an Atari env (ALE/<Game>-v5 or <Game>NoFrameskip-v4) and its "
            f"observations (shape {obs_space.shape}) are not uint8 frame stacks; use dqn.py"
        )
    if not isinstance(action_space, gym.spaces.Discrete):
        raise UsageError(f"DQN needs a Discrete action space, this env has {action_space}")


# ----------------------------------------------------------------------------
# Q-network


class QNetwork(nn.Module):
    """The Nature CNN: (batch, stack, height, width) uint8 frames -> (batch, n_actions)."""

    def __init__(self, obs_space: gym.Space, n_actions: int):
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

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() / 255.0  # (batch, stack, height, width) in [0, 1]
        return self.head(self.conv(x))  # (batch, n_actions)


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
    """

    def __init__(self, capacity: int, obs_space: gym.Space, num_envs: int, seed: int):
        self.stack, *frame_shape = obs_space.shape
        self.slots = capacity // num_envs  # ring length, per env
        self.frames = np.zeros((self.slots, num_envs, *frame_shape), dtype=obs_space.dtype)
        self.actions = np.zeros((self.slots, num_envs), dtype=np.int64)
        self.rewards = np.zeros((self.slots, num_envs), dtype=np.float32)
        self.terminated = np.zeros((self.slots, num_envs), dtype=np.float32)
        self.first = np.zeros((self.slots, num_envs), dtype=bool)
        self.pos = 0  # the slot written next
        self.size = 0  # slots written, at most self.slots
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
        slot, env = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        for _ in range(1000):  # rejection sampling: a few % of slots are not transitions
            s = self.rng.integers(0, self.size, size=batch_size)
            e = self.rng.integers(0, self.first.shape[1], size=batch_size)
            # Slot s holds a transition whose stacks (slots s-stack .. s) are all stored:
            # once the ring is full, the `stack` oldest slots lack their history.
            ok = ~self.first[s, e] & ((s - self.pos) % self.slots >= self.stack)
            slot, env = np.concatenate([slot, s[ok]]), np.concatenate([env, e[ok]])
            if len(slot) >= batch_size:
                break
        else:
            raise ValueError("the replay buffer holds (almost) no complete transitions yet")
        slot, env = slot[:batch_size], env[:batch_size]

        window = (slot[:, None] + np.arange(-self.stack, 1)) % self.slots  # (batch, stack + 1)
        # keep[:, i]: frame i of the window belongs to the episode of the sampled step,
        # i.e. no episode starts after it, at or before the stack's newest frame.
        first = self.first[window, env[:, None]]
        keep = np.ones_like(first)
        for i in range(self.stack - 2, -1, -1):
            keep[:, i] = keep[:, i + 1] & ~first[:, i + 1]
        frames = torch.as_tensor(self.frames[window, env[:, None]], device=device)  # (batch, stack + 1, h, w)
        frames = frames * torch.as_tensor(keep, device=device)[:, :, None, None]
        obs, next_obs = frames[:, :-1], frames[:, 1:]  # each (batch, stack, h, w)
        arrays = (self.actions, self.rewards, self.terminated)
        actions, rewards, terminated = (torch.as_tensor(a[slot, env], device=device) for a in arrays)
        return obs, actions, rewards, next_obs, terminated


# ----------------------------------------------------------------------------
# Algorithm: exploration, TD loss, target network


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """Goes linearly from `start` at t=0 to `end` at t=duration, then stays at `end`."""
    return start + (end - start) * min(t / duration, 1.0)


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


def td_target(target_network: nn.Module, rewards, next_obs, terminated, gamma: float):
    """The Bellman target y = r + gamma * (1 - terminated) * max_a' Q_target(s', a')."""
    # Only `terminated` (the MDP really ended) zeroes the bootstrap. A `truncated` step
    # (a time limit) is stored as not terminated, with s' its true final observation,
    # so its value is still bootstrapped: the future did not end, we stopped watching.
    with torch.no_grad():
        next_q = target_network(next_obs).max(dim=1).values  # (batch,)
        return rewards + gamma * (1.0 - terminated) * next_q


def td_loss(q_network: nn.Module, target_network: nn.Module, batch, gamma: float, loss="huber", double_q=False):
    """Loss between Q(s, a) and the one-step TD target; returns (loss, Q(s, a))."""
    obs, actions, rewards, next_obs, terminated = batch
    if double_q:
        with torch.no_grad():
            a2 = q_network(next_obs).argmax(1, keepdim=True)
            target = rewards + gamma * (1.0 - terminated) * target_network(next_obs).gather(1, a2).squeeze(1)
    else:
        target = td_target(target_network, rewards, next_obs, terminated, gamma)
    q = q_network(obs).gather(1, actions.unsqueeze(1)).squeeze(1)  # (batch,)
    return (F.smooth_l1_loss(q, target) if loss == "huber" else F.mse_loss(q, target)), q


def update_target(target_network: nn.Module, q_network: nn.Module, tau: float) -> None:
    """target <- tau * online + (1 - tau) * target; tau = 1 is an exact copy."""
    with torch.no_grad():
        for t, o in zip(target_network.parameters(), q_network.parameters()):
            t.mul_(1.0 - tau).add_(o, alpha=tau)


# ----------------------------------------------------------------------------
# Evaluation


def evaluate(q_network: nn.Module, args: Args, episodes: int, seed: int,
             device: torch.device, epsilon: float = 0.05):
    """Returns of `episodes` whole games (unclipped, lives ignored) of the epsilon-greedy policy."""
    env = make_env(args.env_id, 1, seed, args)
    rng = np.random.default_rng(seed)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, episode_return = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(select_action(q_network, obs, epsilon, rng, device))
            episode_return += float(reward[0])
            done = terminated[0] or truncated[0]
        returns.append(episode_return)
    env.close()
    return returns


# ----------------------------------------------------------------------------
# Checkpoints: a run stopped by Ctrl-C, SIGTERM or a crash goes on with --resume


def save_checkpoint(path: str, args: Args, modules: dict, loop: dict, envs, rb, exact: bool) -> None:
    """Write what the run needs to go on to `path`, atomically: into a temporary file,
    then renamed over `path`, so a kill during the write leaves the last checkpoint whole.

    exact=True (--checkpoint-buffer) adds the replay buffer and the envs' state (where it
    pickles: not for C++ simulators such as ALE or Box2D), so that a resumed run gives
    exactly the results of an uninterrupted one.
    """
    state = {"args": dataclasses.asdict(args), "loop": loop, "torch_rng": torch.get_rng_state(),
             "modules": {name: m.state_dict() for name, m in modules.items()},
             "envs": None, "replay_buffer": None}
    if exact:
        state["envs"] = pickle_env(envs)
        # numpy arrays as tensors: torch.save writes these without another copy in memory.
        state["replay_buffer"] = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                                  for k, v in vars(rb).items()}
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename
    os.replace(tmp, path)


def load_checkpoint(path: str) -> tuple[Args, dict]:
    """Read a checkpoint file (or the one in a run directory): (its Args, everything else)."""
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        args = Args(**{**state["args"], "resume": path})
    except Exception as e:  # missing, truncated, or another program's file
        raise UsageError(f"cannot resume from {path!r}: {str(e).splitlines()[0]}") from None
    return args, state


def restore_checkpoint(state: dict, modules: dict, envs, rb):
    """Put a checkpoint's state into the run's objects; returns the envs, the saved ones
    where the checkpoint holds them."""
    for name, m in modules.items():
        m.load_state_dict(state["modules"][name])
    torch.set_rng_state(state["torch_rng"])
    if state["replay_buffer"] is None:
        return envs
    for k, v in state["replay_buffer"].items():
        if isinstance(v, torch.Tensor):
            getattr(rb, k)[...] = v.numpy()  # into the preallocated array
        else:
            setattr(rb, k, v)
    if state["envs"] is None:
        return envs
    envs.close()
    return pickle.loads(state["envs"])


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


def catch_stop_signals(stop: list) -> dict:
    """Make SIGINT (Ctrl-C) and SIGTERM append to `stop` instead of ending the process, so
    that train() can finish its step and write a checkpoint; a second Ctrl-C quits at once.
    Returns the previous handlers, which train() puts back."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may set handlers

    def handler(signum, frame):
        if stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.append(signum)

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


# ----------------------------------------------------------------------------
# Training


@dataclass
class Results:
    q_network: nn.Module
    episode_returns: list  # every training game's return (unclipped), in order of completion
    episode_steps: list  # global env step at which each game ended
    losses: list  # (global env step, mean loss since the previous console line)
    eval_returns: list  # returns of the final evaluation
    replay_buffer: "ReplayBuffer"
    output_dir: str
    stopped_by: int = 0  # the signal (SIGINT, SIGTERM) that stopped training early, else 0


class TrainingDiverged(Exception):
    """The loss became NaN or infinite: reported as one line, exit code 1."""


def train(args: Args) -> Results:
    start_time = time.time()
    checkpoint = None
    if args.resume:  # go on with the saved run: its args, its directory
        args, checkpoint = load_checkpoint(args.resume)
    args = resolve_args(args)
    device = torch.device(args.device)
    memory_format = torch.contiguous_format
    if device.type == "cpu":
        # Measured on 2 idle cores (benchmarks/atari_speed.py): a batch-32 update takes
        # 56 ms on 1 thread and 34 ms on 2, with channels_last weights a little faster.
        # Runs that share the cores (parallel seeds) are faster with 1 thread each.
        torch.set_num_threads(args.torch_threads or os.cpu_count())
        memory_format = torch.channels_last
    envs = make_env(args.env_id, args.num_envs, args.seed, args)
    run_dir = os.path.dirname(args.resume) if checkpoint else make_run_dir(args)
    checkpoint_path = os.path.join(run_dir, "checkpoint.pt")
    writer = make_tensorboard_writer(run_dir) if args.tensorboard else None

    # Seeding: torch for the network init, numpy generators for exploration and replay
    # sampling, the env's seed for its dynamics. Same seed, same run (on a CPU).
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    obs_space, n_actions = envs.single_observation_space, int(envs.single_action_space.n)

    q_network = QNetwork(obs_space, n_actions).to(device, memory_format=memory_format)
    target_network = QNetwork(obs_space, n_actions).to(device, memory_format=memory_format)
    target_network.load_state_dict(q_network.state_dict())
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, fused=device.type == "cpu")
    rb = ReplayBuffer(args.buffer_size, obs_space, args.num_envs, seed=args.seed + 1)
    modules = {"q_network": q_network, "target_network": target_network, "optimizer": optimizer}

    global_step, next_log, learning_starts = 0, args.log_interval, args.learning_starts
    episode_returns, episode_steps, losses, recent_losses, last_loss = [], [], [], [], float("nan")
    if checkpoint:
        envs = restore_checkpoint(checkpoint, modules, envs, rb)
        loop = checkpoint["loop"]
        global_step, next_log, rng = loop["global_step"], loop["next_log"], loop["rng"]
        episode_returns, episode_steps = loop["episode_returns"], loop["episode_steps"]
        losses, recent_losses, last_loss = loop["losses"], loop["recent_losses"], loop["last_loss"]
        start_time -= loop["time_s"]  # the metrics' clock goes on from the checkpoint
        if checkpoint["replay_buffer"] is None:  # refill it before learning again
            learning_starts = global_step + max(args.learning_starts, args.batch_size)
    if checkpoint and checkpoint["envs"] is not None:  # the envs go on mid-episode
        obs, autoreset, lives = loop["obs"], loop["autoreset"], loop["lives"]
        running_return, running_length = loop["running_return"], loop["running_length"]
    else:
        running_return = np.zeros(args.num_envs)
        running_length = np.zeros(args.num_envs, dtype=np.int64)
        # True for an env whose previous step ended an episode: its next step is a reset.
        autoreset = np.zeros(args.num_envs, dtype=bool)
        obs, info = envs.reset(seed=args.seed + global_step)
        lives = info.get("lives")  # None for envs without lives
        zeros = np.zeros(args.num_envs)
        rb.add(obs[:, -1], zeros, zeros, zeros, first=np.ones(args.num_envs, dtype=bool))

    try:  # checked here, not after hours of training
        metrics_file = open(os.path.join(run_dir, "metrics.csv"), "a" if checkpoint else "w", newline="")
    except OSError as e:
        raise UsageError(f"cannot write to {run_dir!r}: {e.strerror}") from None
    metrics = csv.writer(metrics_file)
    if checkpoint:
        metrics_file.truncate(loop["metrics_bytes"])  # drop rows written after the checkpoint
    else:
        metrics.writerow(["step", "time_s", "episode", "return", "length", "epsilon", "loss"])

    def write_checkpoint():
        metrics_file.flush()
        loop = dict(global_step=global_step, next_log=next_log, rng=rng, episode_returns=episode_returns,
                    episode_steps=episode_steps, losses=losses, recent_losses=recent_losses,
                    last_loss=last_loss, obs=obs, autoreset=autoreset, lives=lives, running_return=running_return,
                    running_length=running_length, time_s=time.time() - start_time,
                    metrics_bytes=metrics_file.tell())
        save_checkpoint(checkpoint_path, args, modules, loop, envs, rb, exact=args.checkpoint_buffer)

    stop = []  # Ctrl-C or SIGTERM: finish the step, write a checkpoint, stop
    handlers = catch_stop_signals(stop)
    train_start, first_step = time.time(), global_step
    try:
        while global_step < args.total_timesteps and not stop:
            epsilon = linear_schedule(args.start_e, args.end_e,
                                      int(args.exploration_fraction * args.total_timesteps), global_step)
            actions = select_action(q_network, obs, epsilon, rng, device)
            next_obs, rewards, terminated, truncated, info = envs.step(actions)

            # Learn from a lost life as from a game over (the agent learns that dying ends
            # its rewards), but play on: the game goes on and its return stays whole.
            life_lost = np.zeros(args.num_envs, dtype=bool)
            if lives is not None:
                life_lost = args.episodic_life & ~autoreset & (info["lives"] < lives)
                lives = info["lives"]
            learn_rewards = np.sign(rewards) if args.clip_rewards else rewards
            # Store each env's newest frame. On a reset step, obs is the last episode's final
            # observation and next_obs the new episode's first, which no action connects: its
            # frame starts an episode and is no transition. next_obs of a truncated step is
            # the true final observation (NEXT_STEP autoreset).
            real = ~autoreset
            rb.add(next_obs[:, -1], actions, learn_rewards, terminated | life_lost, first=autoreset)
            running_return[real] += rewards[real]
            running_length[real] += 1
            prev_step, global_step = global_step, global_step + int(real.sum())

            done = terminated | truncated
            for i in np.flatnonzero(done):
                episode_returns.append(float(running_return[i]))
                episode_steps.append(global_step)
                metrics.writerow([global_step, f"{time.time() - start_time:.3f}", len(episode_returns),
                                  running_return[i], running_length[i], f"{epsilon:.4f}",
                                  f"{last_loss:.5f}"])
                if writer:
                    writer.add_scalar("charts/episodic_return", running_return[i], global_step)
            running_return[done], running_length[done] = 0.0, 0
            autoreset = done
            obs = next_obs

            # Learn: `gradient_steps` updates each time global_step crosses a multiple of
            # train_frequency (with several envs, one iteration may cross more than one).
            if global_step > learning_starts:
                rounds = global_step // args.train_frequency - prev_step // args.train_frequency
                for _ in range(rounds * args.gradient_steps):
                    loss, q = td_loss(q_network, target_network,
                                      rb.sample(args.batch_size, device), args.gamma, args.loss, args.double_q)
                    last_loss = loss.item()
                    recent_losses.append(last_loss)
                    # Stop before the step writes NaN into the weights. A finite loss means
                    # finite Q-values and targets in the batch.
                    if not np.isfinite(last_loss):
                        raise TrainingDiverged(
                            f"the TD loss is {last_loss} at step {global_step}; training stopped"
                            + (f", the last good checkpoint is {checkpoint_path}"
                               if os.path.exists(checkpoint_path) else ", no checkpoint was written"))
                    optimizer.zero_grad()
                    loss.backward()
                    if args.max_grad_norm:
                        nn.utils.clip_grad_norm_(q_network.parameters(), args.max_grad_norm)
                    optimizer.step()
                if global_step // args.target_network_frequency > prev_step // args.target_network_frequency:
                    update_target(target_network, q_network, args.tau)

            if global_step >= next_log:
                next_log += args.log_interval
                sps = (global_step - first_step) / (time.time() - train_start)
                mean_loss = float(np.mean(recent_losses)) if recent_losses else float("nan")
                losses.append((global_step, mean_loss))
                recent = np.mean(episode_returns[-20:]) if episode_returns else float("nan")
                print(f"step {global_step:>8}  episodes {len(episode_returns):>5}  "
                      f"return(last 20) {recent:8.1f}  epsilon {epsilon:.3f}  loss {mean_loss:.4f}  "
                      f"{sps:6.0f} steps/s  ~{(args.total_timesteps - global_step) / sps:4.0f} s left",
                      flush=True)
                if writer:
                    writer.add_scalar("losses/td_loss", mean_loss, global_step)
                    writer.add_scalar("charts/epsilon", epsilon, global_step)
                recent_losses = []

            if args.checkpoint_every and global_step // args.checkpoint_every > prev_step // args.checkpoint_every:
                write_checkpoint()
        if stop:
            write_checkpoint()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        envs.close()
        metrics_file.close()
    if stop:
        print(f"stopped at step {global_step} by {signal.Signals(stop[0]).name}; checkpoint: {checkpoint_path}\n"
              f"resume with: python {os.path.basename(__file__)} --resume {checkpoint_path}", flush=True)
        return Results(q_network, episode_returns, episode_steps, losses, [], rb, run_dir, stop[0])

    eval_returns = evaluate(q_network, args, args.eval_episodes, args.seed + 10_000,
                            device, epsilon=args.eval_epsilon)
    if eval_returns:
        print(f"evaluation (epsilon {args.eval_epsilon}) over {len(eval_returns)} games: "
              f"{np.mean(eval_returns):.1f} +- {np.std(eval_returns):.1f}")
    if args.save_model:
        torch.save({"q_network": q_network.state_dict(), "args": dataclasses.asdict(args)},
                   os.path.join(run_dir, "model.pt"))
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump({"args": dataclasses.asdict(args), "start_unix_time": start_time,
                   "train_seconds": time.time() - train_start, "eval_returns": eval_returns,
                   "episodes": len(episode_returns)}, f, indent=1)
    if writer:
        writer.close()
    print(f"results in {run_dir}")
    return Results(q_network, episode_returns, episode_steps, losses, eval_returns, rb, run_dir)


# ----------------------------------------------------------------------------
# Output directory; optional integrations, imported only when asked for


def make_run_dir(args: Args) -> str:
    """output_dir/<env>__<seed>__<date-time>, created now so a bad path fails before training."""
    name = f"{args.env_id.replace('/', '-')}__{args.seed}__{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, n = os.path.join(args.output_dir, name), 1
    while os.path.exists(run_dir):  # two runs started in the same second
        run_dir, n = os.path.join(args.output_dir, f"{name}-{n}"), n + 1
    try:
        os.makedirs(run_dir)
    except OSError as e:
        raise UsageError(f"cannot create the output directory {run_dir!r}: {e.strerror}") from None
    return run_dir


def require(module: str, flag: str) -> None:
    import importlib.util
    if importlib.util.find_spec(module) is None:
        raise UsageError(f"{flag} needs the {module} package: pip install {module}")


def make_tensorboard_writer(run_dir: str):
    require("tensorboard", "--tensorboard")
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(run_dir)


def main() -> None:
    try:
        results = train(tyro.cli(Args))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: no checkpoint written", file=sys.stderr)
        sys.exit(130)
    if results.stopped_by:  # a checkpoint was written
        sys.exit(128 + results.stopped_by)


if __name__ == "__main__":
    main()
