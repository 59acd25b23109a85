"""Deep Q-Network (DQN) in one file, for gymnasium environments with discrete actions.

DQN (Mnih et al. 2015, "Human-level control through deep reinforcement learning")
learns Q(s, a), the expected discounted return of taking action a in state s, by
regressing it towards the Bellman target r + gamma * max_a' Q_target(s', a'),
on transitions replayed uniformly from a buffer of past experience.

    pip install -r requirements.txt
    python dqn.py --env-id CartPole-v1          # `python dqn.py --help` lists every flag

Sections, in reading order:
  Args              every setting, with its unit
  make_env          gymnasium vector env (auto-resets on the NEXT step)
  QNetwork          MLP, input and output sizes taken from the spaces
  ReplayBuffer      preallocated numpy ring buffer, uniform sampling
  linear_schedule   epsilon decay
  select_action     epsilon-greedy over a batch of envs
  td_loss           the Bellman / TD target and the loss
  n_step_transitions  n-step returns (--n-step), truncation and episode ends handled
  update_target     hard copy or Polyak averaging
  evaluate          greedy policy on a separate env
  save_checkpoint   checkpoints written atomically, for Ctrl-C, SIGTERM and --resume
  train             the loop: act, store, learn; returns its results
"""

import collections
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


# ----------------------------------------------------------------------------
# Args


# A switch whose default comes from the env's preset: --flag, --no-flag, or neither (None).
PresetBool = tyro.conf.DisallowNone[bool | None]


@dataclass
class Args:
    # Environment
    env_id: str = "CartPole-v1"
    """gymnasium env id; any env with a Discrete action space and a Box or Discrete observation"""
    seed: int = 1
    """seed of the run: network init, exploration, replay sampling and the envs"""
    total_timesteps: int | None = None
    """length of training, in env steps (transitions), summed over all envs [preset]"""
    num_envs: int | None = None
    """envs stepped in lockstep; their actions come from one batched forward pass [preset]"""

    # Learning
    learning_rate: float | None = None
    """Adam learning rate [preset]"""
    gamma: float | None = None
    """discount factor of future rewards [preset]"""
    batch_size: int | None = None
    """transitions per gradient update [preset]"""
    buffer_size: int | None = None
    """replay capacity, in transitions; the oldest are overwritten first [preset]"""
    learning_starts: int | None = None
    """env steps of experience collected before the first gradient update [preset]"""
    train_frequency: int | None = None
    """env steps between two rounds of gradient updates [preset]"""
    gradient_steps: int | None = None
    """gradient updates per round [preset]"""
    target_network_frequency: int | None = None
    """env steps between two target-network updates [preset]"""
    tau: float | None = None
    """target update rate: 1.0 copies the online net, < 1 is Polyak averaging [preset]"""
    hidden_sizes: tuple[int, ...] | None = None
    """widths of the MLP's hidden layers [preset]"""
    layer_norm: PresetBool = None
    """LayerNorm after each hidden Linear layer: keeps Q-learning stable when the target follows quickly [preset]"""
    small_last_layer: PresetBool = None
    """initialise the output layer near zero, so every Q-value starts near 0 [preset]"""
    loss: str | None = None
    """TD loss: "huber" (the Nature paper's error clipping) or "mse" [preset]"""
    double_q: PresetBool = None
    """Double DQN target: the online net picks a', the target net values it (less overestimation) [preset]"""
    max_grad_norm: float | None = None
    """clip the gradient's global norm to this value; 0 turns clipping off [preset]"""
    n_step: int | None = None
    """n-step returns: the target sums n rewards, then bootstraps from the state n steps later [preset]"""

    # Exploration
    start_e: float = 1.0
    """epsilon at step 0 (probability of a uniformly random action)"""
    end_e: float | None = None
    """epsilon after the decay [preset]"""
    exploration_fraction: float | None = None
    """fraction of total_timesteps over which epsilon decays linearly [preset]"""

    # Evaluation, logging, output
    eval_episodes: int = 10
    """episodes of the greedy policy run on a separate env after training"""
    log_interval: int = 5_000
    """env steps between two console lines"""
    output_dir: str = "runs"
    """each run writes metrics.csv, summary.json and model.pt to output_dir/<run name>"""
    save_model: bool = True
    """save the trained Q-network and these args to model.pt"""
    capture_video: bool = False
    """record the evaluation episodes to mp4 (needs moviepy)"""
    tensorboard: bool = False
    """also log to TensorBoard (needs tensorboard)"""
    device: str = "cpu"
    """torch device; small MLPs train faster on the CPU than on a GPU"""

    # Checkpoints
    checkpoint_every: int = 100_000
    """env steps between two checkpoints (<run dir>/checkpoint.pt, replaced atomically); 0 turns them off. Ctrl-C and SIGTERM always write one"""
    checkpoint_buffer: bool = False
    """also save the replay buffer (and the envs, where they pickle), so that a resumed run gives exactly the uninterrupted run's results; without it, the buffer is refilled before learning goes on"""
    resume: str | None = None
    """continue the run saved in this checkpoint file (or run directory), with the args it was started with; other flags are ignored"""


# Settings that differ between envs. An Args field left at None takes the value for its
# env here, or else from DEFAULTS. Measured by benchmarks/ (see README).
DEFAULTS = dict(
    total_timesteps=100_000, num_envs=1, learning_rate=1e-3, gamma=0.99, batch_size=128,
    buffer_size=50_000, learning_starts=1_000, train_frequency=4, gradient_steps=1,
    target_network_frequency=500, tau=1.0, hidden_sizes=(128, 128), end_e=0.05,
    exploration_fraction=0.2, layer_norm=False, small_last_layer=False, loss="huber",
    double_q=False, max_grad_norm=0.0, n_step=1,
)
ENV_PRESETS = {
    # Measured (README): one-step DQN plateaus near 200 here (the cart drifts off the
    # track) unless the target follows the online net quickly; LayerNorm and Double DQN
    # keep that stable. 10-step returns reach 475 in about half the env steps; their rewards
    # come from the policy that collected them, so a small buffer keeps them recent.
    "CartPole-v1": dict(total_timesteps=40_000, num_envs=8, train_frequency=8, batch_size=128,
                        hidden_sizes=(128, 128), layer_norm=True, small_last_layer=True,
                        double_q=True, loss="mse", target_network_frequency=8, tau=0.2,
                        learning_rate=2e-3, gamma=0.995, n_step=10,
                        end_e=0.01, exploration_fraction=0.15, buffer_size=10_000),
    # Measured on 3 seeds while tuning (greedy eval -81, -83, -87): without LayerNorm the
    # greedy policy sometimes hangs for all 500 steps although training returns look fine.
    "Acrobot-v1": dict(total_timesteps=100_000, num_envs=4, train_frequency=16, gradient_steps=4,
                       learning_rate=1e-3, batch_size=128, buffer_size=50_000, learning_starts=1_000,
                       target_network_frequency=4, tau=0.02, double_q=True, layer_norm=True,
                       hidden_sizes=(128, 128), end_e=0.05, exploration_fraction=0.12),
    # rl-zoo's settings (1 env, 256x256, gradient norm clipped at 10) plus 3-step returns.
    # Measured on seeds 1-5 while tuning: the training return reached -120 to -131 on every
    # seed (1-step: 3 of 5); at width 128 with 4 envs, 1-step, no greedy policy reached the flag.
    "MountainCar-v0": dict(total_timesteps=120_000, num_envs=1, train_frequency=16, gradient_steps=8,
                           learning_rate=4e-3, batch_size=128, buffer_size=10_000, learning_starts=1_000,
                           gamma=0.98, target_network_frequency=600, end_e=0.07, n_step=3,
                           exploration_fraction=0.2, hidden_sizes=(256, 256), max_grad_norm=10.0),
    # 3-step returns measured on the three seeds (3, 4, 5) whose greedy policy hovered
    # with 1-step ones: greedy eval 155, 164, 233 instead of 50, 106, 69.
    "LunarLander-v3": dict(total_timesteps=150_000, num_envs=4, train_frequency=16, gradient_steps=8,
                           learning_rate=6.3e-4, batch_size=128, buffer_size=100_000, learning_starts=1_000,
                           target_network_frequency=4, tau=0.02, double_q=True, n_step=3,
                           hidden_sizes=(128, 128), end_e=0.05, exploration_fraction=0.12),
}


def resolve_args(args: Args) -> Args:
    """Fill the fields left at None from ENV_PRESETS, then DEFAULTS; check every value."""
    preset = {**DEFAULTS, **ENV_PRESETS.get(args.env_id, {})}
    args = dataclasses.replace(
        args, **{k: v for k, v in preset.items() if getattr(args, k) is None}
    )
    checks = [
        (args.total_timesteps > 0, "--total-timesteps must be positive"),
        (args.num_envs >= 1, "--num-envs must be at least 1"),
        (args.learning_rate > 0, "--learning-rate must be positive"),
        (0 <= args.gamma <= 1, "--gamma must be in [0, 1]"),
        (args.batch_size >= 1, "--batch-size must be at least 1"),
        (args.buffer_size >= args.batch_size, "--buffer-size must be at least --batch-size"),
        (0 <= args.learning_starts < args.total_timesteps,
         "--learning-starts must be in [0, --total-timesteps)"),
        (args.train_frequency >= 1, "--train-frequency must be at least 1"),
        (args.gradient_steps >= 1, "--gradient-steps must be at least 1"),
        (args.n_step >= 1, "--n-step must be at least 1"),
        (args.target_network_frequency >= 1, "--target-network-frequency must be at least 1"),
        (0 < args.tau <= 1, "--tau must be in (0, 1]"),
        (len(args.hidden_sizes) >= 1 and min(args.hidden_sizes) >= 1,
         "--hidden-sizes needs at least one positive width"),
        (0 <= args.end_e <= 1 and 0 <= args.start_e <= 1, "--start-e and --end-e must be in [0, 1]"),
        (0 < args.exploration_fraction <= 1, "--exploration-fraction must be in (0, 1]"),
        (args.eval_episodes >= 0, "--eval-episodes must be non-negative"),
        (args.log_interval >= 1, "--log-interval must be at least 1"),
        (args.checkpoint_every >= 0, "--checkpoint-every must be non-negative"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    return args


class UsageError(Exception):
    """Bad input (a flag value, an env): reported as one line, exit code 2."""


# ----------------------------------------------------------------------------
# Environment


def make_env(env_id: str, num_envs: int, seed: int) -> gym.vector.VectorEnv:
    """A vector env of `num_envs` copies, reset with `seed` (copy i gets seed + i).

    gymnasium 1.x vector envs auto-reset on the NEXT step: the step that ends an
    episode returns its true final observation, and the following step ignores the
    action and returns the first observation of a new episode (reward 0). That
    reset step is not a transition; train() never stores it.
    """
    try:
        # CartPole has a numpy-vectorized implementation that gymnasium picks here; other
        # envs run as copies stepped one after another (SyncVectorEnv).
        envs = gym.make_vec(env_id, num_envs=num_envs)
    except gym.error.Error as e:  # unknown id, missing package (box2d, ale-py, ...)
        raise UsageError(f"cannot make env {env_id!r}: {e}") from None
    check_spaces(envs.single_observation_space, envs.single_action_space)
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    envs.action_space.seed(seed)
    return envs


def check_spaces(obs_space: gym.Space, action_space: gym.Space) -> None:
    if not isinstance(action_space, gym.spaces.Discrete):
        raise UsageError(
            f"DQN needs a Discrete action space, this env has {action_space}; "
            "for continuous actions use an actor-critic method (SAC, TD3)"
        )
    if not isinstance(obs_space, (gym.spaces.Box, gym.spaces.Discrete)):
        raise UsageError(
            f"unsupported observation space {obs_space}: dqn.py takes Box (flattened) "
            "or Discrete (one-hot) observations; wrap the env to flatten it"
        )


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
            layers += [nn.Linear(in_size, size)] + ([nn.LayerNorm(size)] if layer_norm else []) + [nn.ReLU()]
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


# ----------------------------------------------------------------------------
# Replay buffer


class ReplayBuffer:
    """Ring buffer of transitions (obs, action, reward, next_obs, terminated).

    Arrays are preallocated with the observation space's shape and dtype. Once full,
    each new transition overwrites the oldest one. Sampling is uniform, with replacement.
    """

    def __init__(self, capacity: int, obs_space: gym.Space, seed: int):
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


def update_target(target_network: nn.Module, q_network: nn.Module, tau: float) -> None:
    """target <- tau * online + (1 - tau) * target; tau = 1 is an exact copy."""
    with torch.no_grad():
        for t, o in zip(target_network.parameters(), q_network.parameters()):
            t.mul_(1.0 - tau).add_(o, alpha=tau)


# ----------------------------------------------------------------------------
# Evaluation


def evaluate(q_network: nn.Module, env_id: str, episodes: int, seed: int,
             device: torch.device, epsilon: float = 0.0, video_dir: str | None = None):
    """Returns of `episodes` whole episodes of the (epsilon-)greedy policy on a fresh env."""
    if video_dir:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renders off-screen, no display needed
        env = gym.wrappers.RecordVideo(gym.make(env_id, render_mode="rgb_array"), video_dir,
                                       episode_trigger=lambda _: True, disable_logger=True)
    else:
        env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, episode_return = False, 0.0
        while not done:
            action = select_action(q_network, np.asarray(obs)[None], epsilon, rng, device)[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            episode_return += float(reward)
            done = terminated or truncated
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
    episode_returns: list  # every training episode's return, in order of completion
    episode_steps: list  # global env step at which each episode ended
    losses: list  # (global env step, mean loss since the previous console line)
    eval_returns: list  # returns of the final greedy evaluation
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
    if device.type == "cpu":
        # Measured: an update of a small MLP is no faster on 2 threads than on 1, and
        # several times slower when other processes (parallel seeds) share the cores.
        torch.set_num_threads(1)
    if args.capture_video:
        require("moviepy", "--capture-video")
    envs = make_env(args.env_id, args.num_envs, args.seed)
    run_dir = os.path.dirname(args.resume) if checkpoint else make_run_dir(args)
    checkpoint_path = os.path.join(run_dir, "checkpoint.pt")
    writer = make_tensorboard_writer(run_dir) if args.tensorboard else None

    # Seeding: torch for the network init, numpy generators for exploration and replay
    # sampling, the env's seed for its dynamics. Same seed, same run (on a CPU).
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    obs_space, n_actions = envs.single_observation_space, int(envs.single_action_space.n)

    q_network = QNetwork(obs_space, n_actions, args.hidden_sizes, args.layer_norm, args.small_last_layer).to(device)
    target_network = QNetwork(obs_space, n_actions, args.hidden_sizes, args.layer_norm).to(device)
    target_network.load_state_dict(q_network.state_dict())
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, fused=device.type == "cpu")
    rb = ReplayBuffer(args.buffer_size, obs_space, seed=args.seed + 1)
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
        obs, autoreset, windows = loop["obs"], loop["autoreset"], loop["windows"]
        running_return, running_length = loop["running_return"], loop["running_length"]
    else:
        running_return = np.zeros(args.num_envs)
        running_length = np.zeros(args.num_envs, dtype=np.int64)
        # True for an env whose previous step ended an episode: its next step is a reset.
        autoreset = np.zeros(args.num_envs, dtype=bool)
        obs, _ = envs.reset(seed=args.seed + global_step)
        # Per env, its last steps (obs, action, reward) whose n-step transition is not stored yet.
        windows = [collections.deque() for _ in range(args.num_envs)]

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
                    last_loss=last_loss, obs=obs, autoreset=autoreset, windows=windows,
                    running_return=running_return, running_length=running_length,
                    time_s=time.time() - start_time,
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
            next_obs, rewards, terminated, truncated, _ = envs.step(actions)

            # Store real transitions only: on a reset step, obs is the last episode's final
            # observation and next_obs the new episode's first, which no action connects.
            # next_obs of a truncated step is the true final observation (NEXT_STEP autoreset).
            real = ~autoreset
            rb.add(*n_step_transitions(windows, real, obs, actions, rewards, next_obs, terminated,
                                       truncated, args.n_step, args.gamma))
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
                                      rb.sample(args.batch_size, device), args.gamma ** args.n_step,
                                      args.loss, args.double_q)
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

    video_dir = os.path.join(run_dir, "videos") if args.capture_video else None
    eval_returns = evaluate(q_network, args.env_id, args.eval_episodes, args.seed + 10_000,
                            device, video_dir=video_dir)
    if eval_returns:
        print(f"greedy evaluation over {len(eval_returns)} episodes: "
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
