"""Deep Q-Network (DQN) in one file, for gymnasium environments with discrete actions.

DQN (Mnih et al. 2015) learns Q(s, a), the expected discounted return of taking action a in
state s, by regressing it towards the Bellman target r + gamma * max_a' Q_target(s', a') on
transitions replayed uniformly from a buffer of past experience.

    python dqn.py --env-id CartPole-v1        # --help lists every flag, with this env's values
    python dqn.py --eval-only runs/<run>      # evaluate a trained network again

Args holds the 2015 algorithm, PRESETS what each env changes. CartPole-v1's adds 10-step returns,
the MSE loss, a Polyak-averaged target and 8 envs to tuned settings, and solves what Args alone
does not in 40k steps; Double DQN bought nothing there (docs/ablation.md: what each refinement
buys, and why others left this file). All of DQN comes first, ending with train(); the
operations follow. dqn_atari.py adds Atari pixels.
"""

import argparse
import collections
import contextlib
import copy
import dataclasses
import importlib.util
import json
import math
import os
import signal
import sys
import time
import warnings
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro


@dataclasses.dataclass
class Args:
    # Environment
    env_id: str = "CartPole-v1"  # a gymnasium id, or module:Id for an env that module registers
    seed: int = 1  # seeds network init, exploration, replay sampling and the envs
    total_timesteps: int = 100_000  # env steps (transitions) to train for, over all envs
    num_envs: int = 1  # envs stepped in lockstep, acting from one batched forward pass

    # Learning
    learning_rate: float = 1e-3  # Adam learning rate
    adam_eps: float = 1e-8  # Adam's epsilon, added to the root of its second moment estimate
    gamma: float = 0.99  # discount factor of future rewards
    batch_size: int = 128  # transitions per gradient update
    buffer_size: int = 50_000  # replay capacity in transitions; the oldest are overwritten
    learning_starts: int = 1_000  # env steps collected before the first gradient update
    train_frequency: int = 4  # env steps between two rounds of gradient updates
    gradient_steps: int = 1  # gradient updates per round
    target_network_frequency: int = 500  # env steps between two target-network updates
    tau: float = 1.0  # target update: 1.0 copies the online net, < 1 moves this fraction to it
    n_step: int = 1  # the target sums n discounted rewards, then bootstraps n steps later
    double_q: bool = False  # Double DQN: the online net picks a', the target net values it
    dueling: bool = False  # dueling head: Q(s, a) = V(s) + A(s, a) - mean of A(s, .)
    loss: Literal["huber", "mse"] = "huber"  # TD loss: huber is the Nature paper's clipping
    max_grad_norm: float = 0.0  # clip the gradient's global norm to this value (0: no clipping)
    hidden_sizes: tuple[int, ...] = (128, 128)  # widths of the MLP's hidden layers

    # Exploration
    start_e: float = 1.0  # epsilon (probability of a random action) at step 0
    end_e: float = 0.05  # epsilon after the decay
    exploration_fraction: float = 0.2  # fraction of total_timesteps over which epsilon decays

    # Evaluation, output, machine
    eval_episodes: int = 10  # episodes on a separate env after training
    eval_epsilon: float = 0.0  # epsilon of the evaluation policy (0: greedy)
    eval_max_steps: int = 10_000  # evaluation episodes are cut short here
    eval_only: str = ""  # evaluate the model.pt of this run directory (or file); no training
    capture_video: bool = False  # record the evaluation episodes to mp4 (needs moviepy)
    log_interval: int = 5_000  # env steps between two progress lines
    output_dir: str = "runs"  # runs write to output_dir/<env>__<seed>__<date-time>/
    save_model: bool = True  # save the trained Q-network and these args to model.pt
    device: str = "cpu"  # torch device (cpu, cuda, mps); small MLPs are fastest on the CPU
    torch_threads: int = 1  # CPU threads for torch (a small MLP's update is no faster on 2)

    # Checkpoints
    checkpoint_every: int = 10_000  # env steps between checkpoints (0: none); also on Ctrl-C
    checkpoint_buffer: bool = False  # also save the replay buffer: no refill after a resume
    resume: str = ""  # go on with the run in this checkpoint (or run directory)

    def __post_init__(self):  # a value out of range raises ValueError, which tyro reports
        check_args(self, RANGES)


# Per-env settings: what each env changes in Args. Measured by benchmarks/run.py (README); what
# each refinement beside the 2015 algorithm buys, by benchmarks/ablation.py (docs/ablation.md).
PRESETS = {
    "CartPole-v1": dict(total_timesteps=40_000, num_envs=8, learning_rate=4e-3, gamma=0.995,
                        buffer_size=10_000, train_frequency=24, target_network_frequency=8,
                        tau=0.2, n_step=10, loss="mse", end_e=0.01, exploration_fraction=0.15),
    "Acrobot-v1": dict(train_frequency=16, gradient_steps=4, target_network_frequency=4, tau=0.02,
                       n_step=3, exploration_fraction=0.12),
    "MountainCar-v0": dict(total_timesteps=120_000, learning_rate=4e-3, gamma=0.98,
                           buffer_size=10_000, train_frequency=16, gradient_steps=8,
                           target_network_frequency=600, n_step=3, max_grad_norm=10.0,
                           hidden_sizes=(256, 256), end_e=0.07),
    "LunarLander-v3": dict(total_timesteps=200_000, learning_rate=6.3e-4, buffer_size=100_000,
                           train_frequency=16, gradient_steps=8, target_network_frequency=16,
                           n_step=3, exploration_fraction=0.12),
}


def make_env(args: Args, num_envs: int, evaluation: bool = False) -> gym.vector.VectorEnv:
    """`num_envs` copies of args.env_id stepped together (rendered, to record evaluation videos).

    gymnasium 1.x vector envs auto-reset on the NEXT step: the step that ends an episode returns
    its true final observation, and the next step ignores the action and returns a new episode's
    first observation. That reset step is no transition: the buffer never stores it."""
    render = dict(render_mode="rgb_array") if evaluation and args.capture_video else {}
    if render:  # pygame draws the frames without a display
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:  # (CartPole has a numpy-vectorized version, which gymnasium picks here)
        envs = gym.make_vec(args.env_id, num_envs, **render)
    except (gym.error.Error, ImportError) as e:  # an unknown id, module or package
        error = atari_error(args.env_id) or f"cannot make env {args.env_id!r}: {e}"
        raise UsageError(error) from None
    check_env(envs, args.env_id)
    return envs


class QNetwork(nn.Module):
    """MLP from an observation to one Q-value per action: (batch, *obs) -> (batch, n_actions)."""

    def __init__(self, obs_space: gym.Space, n_actions: int, args: Args):
        super().__init__()
        # A Discrete observation is an index, fed to the MLP as a one-hot vector.
        self.n_obs_values = obs_space.n if isinstance(obs_space, gym.spaces.Discrete) else 0
        self.obs_start = int(obs_space.start) if self.n_obs_values else 0  # Discrete(n, start)
        in_size = self.n_obs_values or int(np.prod(obs_space.shape))
        layers = []
        for size in args.hidden_sizes:
            layers += [nn.Linear(in_size, size), nn.ReLU()]
            in_size = size
        # A dueling head (Dopamine's: after the shared layers) has one more output, V(s), first.
        self.mlp = nn.Sequential(*layers, nn.Linear(in_size, n_actions + int(args.dueling)))
        self.dueling = args.dueling

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.n_obs_values:
            x = F.one_hot(obs.long() - self.obs_start, self.n_obs_values).float()
        else:
            x = obs.reshape(len(obs), -1).float()  # (batch, obs_size)
        q = self.mlp(x)  # (batch, n_actions), or (batch, 1 + n_actions) if dueling
        if self.dueling:  # V(s) + A(s, a), with the advantages centred on their mean
            q = q[:, :1] + q[:, 1:] - q[:, 1:].mean(1, keepdim=True)
        return q


class ReplayBuffer:
    """Ring buffer of n-step transitions (s_t, a_t, R, s_t+n, terminated), with
    R = r_t + gamma r_t+1 + ... + gamma^(n-1) r_t+n-1; n = 1 gives (s, a, r, s', terminated).

    Each env's last steps wait in a window until their n-step transition is complete. When
    an episode terminates, its last steps are stored with the rewards up to the end (nothing
    to bootstrap). When it is truncated they are dropped: they would need gamma^k, k < n, to
    bootstrap from the final observation, and n-1 transitions per episode are few.
    """

    def __init__(self, obs_space: gym.Space, args: Args, seed: int):
        capacity, self.n_step, self.gamma = args.buffer_size, args.n_step, args.gamma
        # float64 observations (numpy's default) are stored as float32: Apple's GPUs have none
        dtype = np.dtype(np.float32 if obs_space.dtype == np.float64 else obs_space.dtype)
        obs_bytes = int(np.prod(obs_space.shape)) * dtype.itemsize
        check_memory(capacity * (2 * obs_bytes + 16), "--buffer-size")  # + a, r, terminated
        self.obs = np.zeros((capacity, *obs_space.shape), dtype=dtype)
        self.next_obs = np.zeros_like(self.obs)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.pos, self.size = 0, 0  # the slot written next; transitions stored (<= capacity)
        self.windows = [collections.deque() for _ in range(args.num_envs)]  # (s, a, r) per env
        self.rng = np.random.default_rng(seed)

    def add(self, obs, actions, rewards, next_obs, terminated, truncated, reset) -> None:
        """One env step of every env; reset[i]: env i's step was an autoreset, no transition."""
        for i in np.flatnonzero(~reset):
            window = self.windows[i]
            window.append((obs[i], actions[i], rewards[i]))
            while len(window) == self.n_step or (terminated[i] and window):
                ret = sum(self.gamma ** k * r for k, (_, _, r) in enumerate(window))
                s, a, _ = window.popleft()
                self.store(s, a, ret, next_obs[i], terminated[i])
            if truncated[i]:
                window.clear()

    def store(self, obs, action, ret, next_obs, terminated) -> None:
        p = self.pos  # once the buffer is full, the oldest transition is overwritten
        self.obs[p], self.actions[p], self.rewards[p] = obs, action, ret
        self.next_obs[p], self.terminated[p] = next_obs, terminated
        self.pos, self.size = (p + 1) % len(self.obs), min(self.size + 1, len(self.obs))

    def sample(self, batch_size: int, device: torch.device):
        """A uniform batch (with replacement) of (obs, actions, returns, next_obs, terminated)."""
        idx = self.rng.integers(0, self.size, size=batch_size)
        arrays = (self.obs, self.actions, self.rewards, self.next_obs, self.terminated)
        return tuple(torch.as_tensor(a[idx], device=device) for a in arrays)


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """Goes linearly from `start` at t=0 to `end` at t=duration, then stays at `end`."""
    return end if t >= duration else start + (end - start) * t / duration


def select_action(q_network: nn.Module, obs: np.ndarray, epsilon: float, n_actions: int,
                  rng: np.random.Generator, device: torch.device) -> np.ndarray:
    """Epsilon-greedy actions for a batch of observations: (n_envs, *obs_shape) -> (n_envs,)."""
    n = len(obs)
    explore = rng.random(n) < epsilon
    actions = rng.integers(0, n_actions, size=n)
    if not explore.all():  # skip the forward pass when every env explores
        obs = obs.astype(np.float32) if obs.dtype == np.float64 else obs  # (mps has no float64)
        with torch.no_grad():
            q = q_network(torch.as_tensor(obs, device=device))  # (n_envs, n_actions)
        actions = np.where(explore, actions, q.argmax(dim=1).cpu().numpy())
    return actions


@torch.no_grad()
def td_target(q_network, target_network, rewards, next_obs, terminated, discount: float,
              double_q: bool):
    """y = R + discount * (1 - terminated) * Q_target(s', a'), with discount = gamma ** n_step.

    a' = argmax Q_target(s', .) (DQN), or argmax Q_online(s', .) (Double DQN)."""
    next_q = target_network(next_obs)  # (batch, n_actions)
    next_action = (q_network(next_obs) if double_q else next_q).argmax(1, keepdim=True)
    # Only `terminated` (the MDP really ended) stops bootstrapping. A time-limit truncation
    # is stored as not terminated, with s' its true final observation: its value is still
    # bootstrapped, because the future did not end, we stopped watching.
    return rewards + discount * (1.0 - terminated) * next_q.gather(1, next_action).squeeze(1)


def td_loss(q_network, target_network, batch, discount: float, loss: str, double_q: bool):
    """The loss between Q(s, a) and the TD target of a batch (s, a, R, s', terminated), and Q."""
    obs, actions, rewards, next_obs, terminated = batch
    target = td_target(q_network, target_network, rewards, next_obs, terminated, discount,
                       double_q)
    q = q_network(obs).gather(1, actions.unsqueeze(1)).squeeze(1)  # (batch,)
    return (F.smooth_l1_loss(q, target) if loss == "huber" else F.mse_loss(q, target)), q


def gradient_step(q_network, target_network, optimizer, batch, args: Args) -> tuple:
    """One optimizer step towards the n-step TD target; returns the loss and the batch's mean Q.
    A NaN or infinite loss is returned without a step, so the weights stay finite."""
    discount = args.gamma ** args.n_step
    loss, q = td_loss(q_network, target_network, batch, discount, args.loss, args.double_q)
    loss_value, mean_q = torch.stack([loss.detach(), q.detach().mean()]).tolist()
    if math.isfinite(loss_value):
        optimizer.zero_grad()
        loss.backward()
        if args.max_grad_norm:
            nn.utils.clip_grad_norm_(q_network.parameters(), args.max_grad_norm)
        optimizer.step()
    return loss_value, mean_q


def update_target(target_network: nn.Module, q_network: nn.Module, tau: float) -> None:
    """target <- tau * online + (1 - tau) * target; tau = 1 is an exact copy."""
    with torch.no_grad():
        for t, o in zip(target_network.parameters(), q_network.parameters()):
            t.mul_(1.0 - tau).add_(o, alpha=tau)


def evaluate(q_network: nn.Module, args: Args, device: torch.device, make_env=make_env,
             video_dir: str = "", say=print) -> list:
    """Returns of args.eval_episodes episodes on a new env, acting with args.eval_epsilon, each
    cut short after args.eval_max_steps steps; recorded to video_dir as mp4 files."""
    envs = make_env(args, 1, evaluation=True)
    n_actions, seed = int(envs.single_action_space.n), run_seeds(args.seed)["eval"]
    rng, returns, cut = np.random.default_rng(run_seeds(args.seed)["eval_explore"]), [], 0
    for episode in range(args.eval_episodes):
        obs, _ = envs.reset(seed=seed + episode)  # episode i: seed + i
        episode_return, done, steps = 0.0, False, 0
        frames = [envs.render()[0]] if video_dir else []
        while not done and steps < args.eval_max_steps:
            actions = select_action(q_network, obs, args.eval_epsilon, n_actions, rng, device)
            obs, reward, terminated, truncated, _ = envs.step(actions)
            episode_return, done = episode_return + float(reward[0]), terminated[0] | truncated[0]
            steps += 1
            if video_dir:
                frames.append(envs.render()[0])
        returns.append(episode_return)
        cut += not done
        if video_dir:
            write_video(frames, os.path.join(video_dir, f"eval-episode-{episode}.mp4"))
    envs.close()
    if cut:
        say(f"{cut} of {len(returns)} evaluation episodes were cut short at "
            f"--eval-max-steps {args.eval_max_steps}")
    if returns:
        say(f"evaluation (epsilon {args.eval_epsilon}) over {len(returns)} episodes: "
            f"{np.mean(returns):.1f} +- {np.std(returns):.1f}")
    return returns


@dataclasses.dataclass
class State:
    """What changes while training, besides the networks and the buffer: in each checkpoint."""
    explore_rng: np.random.Generator
    learning_starts: int  # --learning-starts, later after a resume without the buffer
    global_step: int = 0  # env steps (transitions) collected, over all envs
    episode_returns: list = dataclasses.field(default_factory=list)  # in order of their end
    episode_steps: list = dataclasses.field(default_factory=list)  # global_step at each end
    losses: list = dataclasses.field(default_factory=list)  # (global_step, mean since last line)
    recent_losses: list = dataclasses.field(default_factory=list)  # (loss, mean Q) since then
    last_loss: float = math.nan
    last_q: float = math.nan  # the mean Q(s, a) of the last batch: over-estimation shows here
    train_seconds: float = 0.0  # over every segment of a resumed run
    metrics_bytes: int = 0  # the length of metrics.csv at the checkpoint


def make_optimizer(params, args: Args, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=args.learning_rate, eps=args.adam_eps,  # fused: faster
                            fused=device.type in ("cpu", "cuda"))


def train(args: Args, make_env=make_env, QNetwork=QNetwork, ReplayBuffer=ReplayBuffer,
          make_optimizer=make_optimizer, verbose: bool = True) -> "Results":
    """Train a Q-network on args.env_id, or go on with the run saved in args.resume. dqn_atari.py
    passes its make_env, QNetwork, ReplayBuffer, make_optimizer. verbose=False prints nothing."""
    say = print if verbose else lambda *_, **__: None
    args, checkpoint = load_checkpoint(args) if args.resume else (args, None)
    device, seeds = check_setup(args, make_env), run_seeds(args.seed)
    with contextlib.ExitStack() as cleanup:  # on any exit: close, put back torch's threads
        cleanup.callback(torch.set_num_threads, torch.get_num_threads())
        torch.set_num_threads(args.torch_threads)
        envs = recorded(make_env(args, args.num_envs), args.env_id)  # which episodes end
        cleanup.callback(envs.close)
        torch.manual_seed(seeds["network"])
        obs_space, n_actions = envs.single_observation_space, int(envs.single_action_space.n)
        q_network = QNetwork(obs_space, n_actions, args).to(device)
        target_network = copy.deepcopy(q_network)
        optimizer = make_optimizer(q_network.parameters(), args, device)
        rb = ReplayBuffer(obs_space, args, seeds["replay"])
        state = State(np.random.default_rng(seeds["explore"]), args.learning_starts)
        modules = dict(q_network=q_network, target_network=target_network, optimizer=optimizer)
        if checkpoint:
            restore(checkpoint, args, state, modules, rb)
        run = Run(args, state, cleanup)  # the run directory and its metrics.csv
        stop = stop_signals(cleanup)  # Ctrl-C, SIGTERM: end the step, checkpoint, stop
        say(describe(args, device, run.dir))
        obs, _ = envs.reset(seed=seeds["envs"] + state.global_step)  # (resumed: new episodes)
        autoreset = np.zeros(args.num_envs, dtype=bool)  # env i's next step is a reset
        decay_steps = int(args.exploration_fraction * args.total_timesteps)  # epsilon's

        while state.global_step < args.total_timesteps and not stop:
            # Act: epsilon-greedy in every env at once.
            epsilon = linear_schedule(args.start_e, args.end_e, decay_steps, state.global_step)
            actions = select_action(q_network, obs, epsilon, n_actions, state.explore_rng, device)
            next_obs, rewards, terminated, truncated, infos = envs.step(actions)

            # Store. On a reset step, obs is the last episode's final observation and next_obs
            # the new episode's first: no action connects them, so the buffer skips it. A
            # truncated step's next_obs is its true final observation (NEXT_STEP autoreset).
            rb.add(obs, actions, rewards, next_obs, terminated, truncated, reset=autoreset)
            before = state.global_step
            state.global_step += int((~autoreset).sum())  # real transitions only
            passed = lambda every: state.global_step // every - before // every  # noqa: E731
            autoreset = infos.get("_episode", np.zeros(args.num_envs, dtype=bool))  # ended now
            obs = next_obs

            # Learn: a round of `gradient_steps` updates every train_frequency env steps.
            if state.global_step > state.learning_starts and rb.size >= args.batch_size:
                for _ in range(passed(args.train_frequency) * args.gradient_steps):
                    batch = rb.sample(args.batch_size, device)
                    state.last_loss, state.last_q = gradient_step(q_network, target_network,
                                                                  optimizer, batch, args)
                    state.recent_losses.append((state.last_loss, state.last_q))
                    if not math.isfinite(state.last_loss):
                        raise TrainingDiverged(run.diverged())
                # Sync: the target network follows the online one every so many env steps.
                for _ in range(passed(args.target_network_frequency)):
                    update_target(target_network, q_network, args.tau)

            # Log: a metrics row per finished episode, a progress line every log_interval.
            for i in np.flatnonzero(autoreset):  # the episodes that ended on this step
                run.episode(float(infos["episode"]["r"][i]), int(infos["episode"]["l"][i]),
                            epsilon)
            if passed(args.log_interval):
                say(run.progress(epsilon), flush=True)
            if stop or (args.checkpoint_every and passed(args.checkpoint_every)):
                save_checkpoint(args, state, modules, rb, run)
        state.train_seconds = run.seconds()

    eval_returns = []
    if not stop:  # Evaluate the trained network (saved first: a Ctrl-C may cut the evaluation)
        if args.save_model:
            model = {"q_network": q_network.state_dict(), "args": dataclasses.asdict(args)}
            torch.save(model, os.path.join(run.dir, "model.pt"))
        video_dir = os.path.join(run.dir, "videos") if args.capture_video else ""
        eval_returns = evaluate(q_network, args, device, make_env, video_dir, say)
    results = Results(args, q_network, state.episode_returns, state.episode_steps, state.losses,
                      eval_returns, rb, run.dir, stop[0] if stop else 0)
    return report(results, state, run, say)


# ================================================================================================
# Nothing below is needed to understand DQN: these are the operations around train().


class UsageError(Exception):
    """Bad input (an env, a device, a file): one line on stderr, exit code 2."""


class TrainingDiverged(Exception):
    """The loss became NaN or infinite: one line on stderr, exit code 1."""


Results = collections.namedtuple("Results", "args q_network episode_returns episode_steps losses "
                                 "eval_returns replay_buffer output_dir stopped_by")


def run_seeds(seed: int) -> dict:
    """One seed per random stream, all from --seed, so that no two streams (nor two runs') draw
    the same numbers. Env i takes envs + i, episode i eval + i: 30 bits leave room in 32 (ALE)."""
    streams = np.random.SeedSequence(seed).spawn(6)
    names = ["network", "explore", "replay", "envs", "eval", "eval_explore"]
    return {name: int(s.generate_state(1)[0]) % 2**30 for name, s in zip(names, streams)}


# (lowest, highest) of the numbers that are not just >= 0
RANGES = dict(total_timesteps=(1, math.inf), num_envs=(1, math.inf), gamma=(0, 1),
              batch_size=(1, math.inf), buffer_size=(1, math.inf),
              train_frequency=(1, math.inf), gradient_steps=(1, math.inf),
              target_network_frequency=(1, math.inf), tau=(0, 1), n_step=(1, math.inf),
              hidden_sizes=(1, math.inf), start_e=(0, 1), end_e=(0, 1),
              exploration_fraction=(0, 1), eval_epsilon=(0, 1), eval_max_steps=(1, math.inf),
              log_interval=(1, math.inf), torch_threads=(1, math.inf))


def check_args(args: Args, ranges: dict) -> None:
    for name, value in vars(args).items():
        low, high = ranges.get(name, (0, math.inf))
        numbers = value if isinstance(value, tuple) else [value]
        if not isinstance(value, str) and not all(low <= v <= high for v in numbers):
            raise ValueError(f"--{name.replace('_', '-')} {value} is out of range [{low}, {high}]")
    if args.tau == 0:
        raise ValueError("--tau 0 would never move the target network: give a value in (0, 1]")
    if args.buffer_size < args.batch_size:
        raise ValueError(f"--buffer-size {args.buffer_size} < --batch-size {args.batch_size}")
    if args.learning_starts >= args.total_timesteps:
        raise ValueError(f"--total-timesteps {args.total_timesteps} ends before learning starts "
                         f"(--learning-starts {args.learning_starts})")


def atari_spec(env_id: str):
    """The registered spec of an id of ale-py's (ALE/Pong-v5, PongNoFrameskip-v4), else None."""
    with contextlib.suppress(ImportError):
        import ale_py  # noqa: F401  (registers the ALE ids)
    spec = gym.registry.get(env_id.split(":")[-1])  # (module:Id: the module is not imported)
    return spec if spec is not None and spec.entry_point == "ale_py.env:AtariEnv" else None


def atari_error(env_id: str) -> str:
    return f"{env_id} is an Atari game: train it with dqn_atari.py" if atari_spec(env_id) else ""


def check_env(envs, env_id: str) -> None:
    """Not an Atari game; Discrete actions from 0; Box (flattened) or Discrete (one-hot) obs."""
    actions, observations = envs.single_action_space, envs.single_observation_space
    error = atari_error(env_id)
    if not error and not isinstance(actions, gym.spaces.Discrete):
        error = f"DQN needs Discrete actions, {env_id} has {actions}: try SAC or TD3 for these"
    if not error and actions.start != 0:  # the network's outputs are actions 0 .. n-1
        error = f"{env_id} has actions {actions}: DQN needs them numbered from 0"
    if not error and not isinstance(observations, gym.spaces.Box | gym.spaces.Discrete):
        error = f"{env_id} observes {observations}: DQN needs Box or Discrete observations"
    if error:
        envs.close()
        raise UsageError(error)


def check_setup(args: Args, make_env=make_env) -> torch.device:
    """The device, and what --capture-video needs, before anything is written."""
    try:
        device = torch.device(args.device)
        torch.zeros(1, device=device).cpu()
    except (RuntimeError, AssertionError, ImportError, NotImplementedError) as e:  # (not usable)
        raise UsageError(f"--device {args.device}: {str(e).splitlines()[0]} "
                         "(use --device cpu)") from None
    if args.capture_video and importlib.util.find_spec("moviepy") is None:
        raise UsageError("--capture-video needs moviepy: pip install moviepy")
    if args.capture_video:  # the evaluation's env must draw frames: known now, not after training
        try:
            envs = make_env(args, 1, evaluation=True)
            envs.reset()
            envs.render()[0]  # noqa: B018  (as evaluate() does)
            envs.close()
        except (TypeError, AssertionError, gym.error.Error) as e:  # no render_mode, no rgb_array
            raise UsageError(f"--capture-video: {args.env_id} cannot render frames ({e})") from None
    return device


def check_memory(nbytes: int, flag: str) -> None:
    """Refuse a buffer this memory cannot hold (np.zeros would fail only as it fills, hours in)."""
    sysconf = getattr(os, "sysconf", lambda name: math.inf)  # (Windows has none: no check)
    total = sysconf("SC_PAGE_SIZE") * sysconf("SC_PHYS_PAGES")
    if nbytes > 0.9 * total:
        raise UsageError(f"{flag} needs {nbytes / 1e9:.1f} GB of memory, this machine has "
                         f"{total / 1e9:.1f} GB: lower {flag}")


def recorded(envs: gym.vector.VectorEnv, env_id: str) -> gym.vector.VectorEnv:
    """envs with RecordEpisodeStatistics in its wrappers (on top, if make_env left it out): its
    info["_episode"] says which episodes end, so that the next step, a reset, is not stored."""
    if (mode := envs.metadata.get("autoreset_mode")) != gym.vector.AutoresetMode.NEXT_STEP:
        envs.close()
        raise UsageError(f"{env_id} resets episodes {mode}: dqn.py needs AutoresetMode.NEXT_STEP")
    stats, wrapper = gym.wrappers.vector.RecordEpisodeStatistics, envs
    while isinstance(wrapper, gym.vector.VectorWrapper) and not isinstance(wrapper, stats):
        wrapper = wrapper.env
    return envs if isinstance(wrapper, stats) else stats(envs)


class Run:
    """The run directory (new, or the resumed run's) with metrics.csv, a row per episode (on a
    resume, cut back to the checkpoint), and the progress lines."""

    def __init__(self, args: Args, state: State, cleanup: contextlib.ExitStack):
        self.args, self.state, self.clock = args, state, time.time() - state.train_seconds
        self.dir = os.path.dirname(args.resume) if args.resume else make_run_dir(args)
        self.checkpoint = os.path.join(self.dir, "checkpoint.pt")
        self.file = cleanup.enter_context(open(os.path.join(self.dir, "metrics.csv"), "a"))
        self.file.truncate(state.metrics_bytes)  # drop the rows written after the checkpoint
        self.file.seek(0, os.SEEK_END)  # (truncate leaves the position where it was)
        if not args.resume:
            self.file.write("step,time_s,episode,return,length,epsilon,loss,q\n")
        self.line_time, self.line_step = time.time(), state.global_step

    def seconds(self) -> float:
        return time.time() - self.clock

    def episode(self, ret: float, length: int, epsilon: float) -> None:
        s = self.state
        s.episode_returns.append(ret)
        s.episode_steps.append(s.global_step)
        self.file.write(f"{s.global_step},{self.seconds():.3f},{len(s.episode_returns)},{ret},"
                        f"{length},{epsilon:.4f},{s.last_loss:.5f},{s.last_q:.4f}\n")

    def progress(self, epsilon: float) -> str:
        s, now = self.state, time.time()
        sps = (s.global_step - self.line_step) / max(now - self.line_time, 1e-9)
        self.line_time, self.line_step = now, s.global_step
        loss, q = np.mean(s.recent_losses, axis=0).tolist() if s.recent_losses else [math.nan] * 2
        if s.recent_losses:  # learning has started
            s.losses.append((s.global_step, loss))
        s.recent_losses = []
        recent = np.mean(s.episode_returns[-20:]) if s.episode_returns else math.nan
        left = max(self.args.total_timesteps - s.global_step, 0) / max(sps, 1e-9)
        return (f"step {s.global_step:>8}  episodes {len(s.episode_returns):>5}  return(last 20) "
                f"{recent:8.1f}  epsilon {epsilon:.3f}  loss {loss:.4f}  Q {q:6.2f}  "
                f"{sps:6.0f} steps/s  ~{left:4.0f} s left")

    def diverged(self) -> str:
        kept = (f"the last good checkpoint is {self.checkpoint}" if os.path.exists(self.checkpoint)
                else "no checkpoint was written")
        return f"the TD loss is {self.state.last_loss} at step {self.state.global_step}; {kept}"


def make_run_dir(args: Args) -> str:
    """output_dir/<env>__<seed>__<date-time>, created once every check has passed."""
    name = f"{args.env_id.replace('/', '-').replace(':', '-')}__{args.seed}__"
    run_dir = os.path.join(args.output_dir, name + time.strftime("%Y%m%d-%H%M%S"))
    n, base = 1, run_dir
    while os.path.exists(run_dir):  # two runs started in the same second
        run_dir, n = f"{base}-{n}", n + 1
    try:
        os.makedirs(run_dir)
    except OSError as e:
        raise UsageError(f"cannot create the output directory {run_dir!r}: {e.strerror}") from None
    return run_dir


def describe(args: Args, device: torch.device, run_dir: str) -> str:
    """The run's first lines: env, device, the settings other than the defaults, the output."""
    defaults = {f.name: f.default for f in dataclasses.fields(args)}
    shown = {k: v for k, v in vars(args).items() if k not in ("env_id", "seed", "output_dir")}
    changed = [f"{k}={v}" for k, v in shown.items() if v != defaults[k]]
    return (f"{args.env_id}, seed {args.seed}, on {device}; settings other than the defaults: "
            f"{' '.join(changed) or 'none'}\noutput: {run_dir}")


def save_checkpoint(args: Args, state: State, modules: dict, rb, run: Run) -> None:
    """What the run needs to go on, only tensors and plain values (so loading it runs no code),
    written to a temporary file renamed over the last: a kill mid-write leaves that one whole."""
    run.file.flush()
    state.train_seconds, state.metrics_bytes = run.seconds(), run.file.tell()
    buffer = {k: torch.from_numpy(v) for k, v in vars(rb).items() if isinstance(v, np.ndarray)}
    buffer.update(pos=rb.pos, size=rb.size, rng=rb.rng.bit_generator.state)
    checkpoint = dict(args=dataclasses.asdict(args),
                      state={**vars(state), "explore_rng": state.explore_rng.bit_generator.state},
                      modules={name: m.state_dict() for name, m in modules.items()},
                      replay_buffer=buffer if args.checkpoint_buffer else None)
    with open(run.checkpoint + ".tmp", "wb") as f:
        torch.save(checkpoint, f)
        os.fsync(f.fileno())  # on disk before the rename
    os.replace(run.checkpoint + ".tmp", run.checkpoint)


def load(path: str, name: str, flag: str, args: Args, key: str) -> tuple:
    """(path, dict, Args) of a file this program saved (`path`, or `name` in the run directory
    `path`), which has `key`. Read as tensors and plain values only: a file cannot run code."""
    path = os.path.join(path, name) if os.path.isdir(path) else path
    try:
        with warnings.catch_warnings():  # torch's, on a file not of this program: not shown
            warnings.simplefilter("ignore")
            saved = torch.load(path, map_location="cpu", weights_only=True)
            settings = saved["args"]  # (a tensor, say, warns when indexed with a string)
        known = {f.name for f in dataclasses.fields(args)}  # (not the flags of older versions)
        older = getattr(args, "OLDER_FILES", {})  # what a file saved before a setting ran
        saved_args = type(args)(**{**older, **{k: v for k, v in settings.items() if k in known}})
        if not isinstance(saved_args.env_id, str):
            raise TypeError("env_id")
        saved[key]  # noqa: B018  (a checkpoint.pt has a "state", a model.pt a "q_network")
        if set(settings) - known:
            print(f"{flag}: {path} has settings this version does not have, left out: "
                  f"{', '.join(sorted(set(settings) - known))}", file=sys.stderr)
    except OSError as e:
        raise UsageError(f"{flag} {path}: {e.strerror}") from None
    except Exception:
        raise UsageError(f"{flag} {path}: not a {name} of this program (checkpoint.pt: --resume, "
                         "model.pt: --eval-only)") from None
    if ":" in saved_args.env_id and saved_args.env_id != args.env_id:  # module:Id imports module
        raise UsageError(f"{flag} {path}: its env {saved_args.env_id} imports a module, which "
                         f"runs its code; to allow it, add --env-id {saved_args.env_id}")
    return path, saved, saved_args


def load_checkpoint(args: Args) -> tuple:
    """The run to go on with: its checkpoint, its settings with this command's device, threads."""
    path, checkpoint, saved_args = load(args.resume, "checkpoint.pt", "--resume", args, "state")
    run_dir = os.path.dirname(path)
    if os.path.exists(os.path.join(run_dir, "summary.json")):
        raise UsageError(f"--resume {path}: that run has finished: see its summary.json (and "
                         "--eval-only, for its model.pt)")
    if not os.path.exists(os.path.join(run_dir, "metrics.csv")):
        raise UsageError(f"--resume {path}: no metrics.csv beside it; resume a checkpoint.pt "
                         "in its run directory")
    here = dict(resume=path, device=args.device, torch_threads=args.torch_threads)
    return dataclasses.replace(saved_args, **here), checkpoint


def restore(checkpoint: dict, args: Args, state: State, modules: dict, rb) -> None:
    """The saved loop state, networks, optimizer and buffer (without it, learning waits)."""
    saved = checkpoint["state"]
    try:
        state.explore_rng.bit_generator.state = saved["explore_rng"]
        saved["last_q"]  # noqa: B018  (older versions' checkpoints have no mean Q: refused)
        saved_group = checkpoint["modules"]["optimizer"]["param_groups"][0]
        if set(saved_group) - set(modules["optimizer"].param_groups[0]):  # another optimizer's
            raise KeyError("optimizer")
        for name, m in modules.items():
            m.load_state_dict(checkpoint["modules"][name])
    except (KeyError, TypeError, ValueError, RuntimeError):  # another network than its args make
        raise UsageError(f"--resume {args.resume}: its state or networks do not fit (made by "
                         "another version of this program, or of torch?)") from None
    vars(state).update({k: v for k, v in saved.items() if k != "explore_rng"})
    if checkpoint["replay_buffer"] is None:
        state.learning_starts = state.global_step + max(args.learning_starts, args.batch_size)
        return
    for name, value in checkpoint["replay_buffer"].items():
        setattr(rb, name, value.numpy() if isinstance(value, torch.Tensor) else value)
    rb.rng = np.random.default_rng()
    rb.rng.bit_generator.state = checkpoint["replay_buffer"]["rng"]


def stop_signals(cleanup: contextlib.ExitStack) -> list:
    """Ctrl-C and SIGTERM: end the step, write a checkpoint, then stop (a 2nd Ctrl-C quits now)."""
    stop = []

    def handler(signum, frame):
        if stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.append(signum)

    with contextlib.suppress(ValueError):  # (only the main thread may set handlers)
        for sig in (signal.SIGINT, signal.SIGTERM):
            cleanup.callback(signal.signal, sig, signal.signal(sig, handler))
    return stop


def report(results: Results, state: State, run: Run, say) -> Results:
    """How to resume a stopped run, or the finished run's summary.json."""
    if results.stopped_by:
        env = f" --env-id {results.args.env_id}" if ":" in results.args.env_id else ""  # load()
        say(f"stopped at step {state.global_step} by {signal.Signals(results.stopped_by).name}; "
            f"resume with: python {os.path.basename(sys.argv[0])} --resume {run.checkpoint}{env}")
        return results
    with open(os.path.join(run.dir, "summary.json"), "w") as f:
        json.dump({"args": dataclasses.asdict(results.args), "train_seconds": state.train_seconds,
                   "eval_returns": results.eval_returns, "episodes": len(state.episode_returns)},
                  f, indent=1)
    say(f"results in {run.dir}")
    return results


def write_video(frames: list, path: str) -> None:
    from moviepy.video.io.ImageSequenceClip import ImageSequenceClip
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ImageSequenceClip(frames, fps=30).write_videofile(path, logger=None)


def evaluate_saved(args: Args, make_env=make_env, QNetwork=QNetwork) -> list:
    """--eval-only: a run's model.pt, with its settings and this command's evaluation flags."""
    path, saved, trained = load(args.eval_only, "model.pt", "--eval-only", args, "q_network")
    flags = ["eval_episodes", "eval_epsilon", "eval_max_steps", "capture_video", "device"]
    args = dataclasses.replace(trained, **{k: getattr(args, k) for k in flags})
    device, envs = check_setup(args, make_env), make_env(args, 1)
    q_network = QNetwork(envs.single_observation_space, int(envs.single_action_space.n), args)
    envs.close()
    try:
        q_network.load_state_dict(saved["q_network"])
    except (RuntimeError, TypeError, AttributeError):  # another network than its args make
        raise UsageError(f"--eval-only {path}: its network does not fit its settings "
                         "(made by another version of this program?)") from None
    video_dir = os.path.join(os.path.dirname(path), "videos") if args.capture_video else ""
    return evaluate(q_network.to(device), args, device, make_env, video_dir)


def preset_args(env_id: str, Args=Args, presets=PRESETS, preset: str = "", **overrides) -> Args:
    """Args for env_id: the defaults, then the env's presets (dqn_atari.py: those `preset`
    names), then `overrides`. (Args() has the defaults alone.)"""
    values = presets[preset] if preset else presets.get(env_id, {})
    return Args(**{**values, "env_id": env_id, **overrides})


def parse_args(argv=None, Args=Args, presets=PRESETS, named: bool = False) -> Args:
    """The command line, on the presets of the env it names (named: dqn_atari.py's, of the one
    --preset names), so that --help shows them. tyro reports a bad flag or value: exit code 2."""
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    # (nargs="?": a flag given without its value is left to tyro, which says so)
    first.add_argument("--env-id", "--env_id", nargs="?", const=Args.env_id, default=Args.env_id)
    env_id = first.parse_known_args(argv)[0].env_id
    choose = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    choose.add_argument("--preset", choices=list(presets), default="")  # (no setting: not tyro's)
    known, argv = choose.parse_known_args(argv) if named else (choose.parse_args([]), argv)
    return tyro.cli(Args, default=preset_args(env_id, Args, presets, known.preset), args=argv)


def main(Args=Args, presets=PRESETS, named: bool = False, **parts) -> None:
    """`python dqn.py`, and dqn_atari.py with its Args, presets and parts for train()."""
    args = parse_args(None, Args, presets, named)
    try:
        if args.eval_only:
            evaluate_saved(args, parts.get("make_env", make_env), parts.get("QNetwork", QNetwork))
            return
        results = train(args, **parts)
    except (UsageError, TrainingDiverged) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, UsageError) else 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    if results.stopped_by:  # a checkpoint was written
        sys.exit(128 + results.stopped_by)


if __name__ == "__main__":
    main()
