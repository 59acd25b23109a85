"""One benchmark run, in its own process, recorded by benchmarks/episode_log.py; run by run.py.

    python benchmarks/train_one.py --impl dqn --env-id CartPole-v1 --seed 1 --out DIR \
        --launched UNIX_TIME [dqn.py flags...]
    python benchmarks/train_one.py --impl sb3 --env-id CartPole-v1 --seed 1 --out DIR --launched UNIX_TIME

--impl dqn trains dqn.py as `python dqn.py` does (dqn.main(), the same CLI flags), with the
vector env that dqn.make_env builds wrapped in an episode recorder; --impl dqn_atari does the
same with dqn_atari.py (recorded beneath its LearningSignal: whole games, real scores). --impl sb3 trains
Stable-Baselines3's DQN with the rl-baselines3-zoo settings for the env, each env wrapped in
the same kind of recorder, then runs its greedy policy for 10 episodes as dqn.py does.

Writes to DIR: episodes.csv (every training episode: env steps, seconds since --launched,
return, length) and summary.json (greedy evaluation returns, env steps, settings).
"""

import argparse
import importlib
import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from episode_log import EpisodeLog, EpisodeRecorder, VectorEpisodeRecorder  # noqa: E402

EVAL_EPISODES = 10

# Stable-Baselines3 DQN settings from rl-baselines3-zoo, hyperparams/dqn.yml
# (https://github.com/DLR-RM/rl-baselines3-zoo/blob/master/hyperparams/dqn.yml, as of commit
# ce95481b041fe5314c1b2f1a53940d169b9253fc). The zoo trains these envs with one env
# (n_envs 1), an "MlpPolicy" and no normalisation; n_timesteps is the zoo's training length.
# LunarLander-v3 takes the zoo's LunarLander-v2 entry (v3 only fixed bugs in the env).
SB3_ZOO = {
    "CartPole-v1": dict(  # "Almost Tuned"
        n_timesteps=50_000, learning_rate=2.3e-3, batch_size=64, buffer_size=100_000,
        learning_starts=1000, gamma=0.99, target_update_interval=10, train_freq=256,
        gradient_steps=128, exploration_fraction=0.16, exploration_final_eps=0.04,
        policy_kwargs=dict(net_arch=[256, 256])),
    "MountainCar-v0": dict(  # "Tuned"
        n_timesteps=120_000, learning_rate=4e-3, batch_size=128, buffer_size=10_000,
        learning_starts=1000, gamma=0.98, target_update_interval=600, train_freq=16,
        gradient_steps=8, exploration_fraction=0.2, exploration_final_eps=0.07,
        policy_kwargs=dict(net_arch=[256, 256])),
    "LunarLander-v3": dict(  # "Tuned" (as LunarLander-v2)
        n_timesteps=100_000, learning_rate=6.3e-4, batch_size=128, buffer_size=50_000,
        learning_starts=0, gamma=0.99, target_update_interval=250, train_freq=4,
        gradient_steps=-1, exploration_fraction=0.12, exploration_final_eps=0.1,
        policy_kwargs=dict(net_arch=[256, 256])),
    "Acrobot-v1": dict(  # "Tuned"
        n_timesteps=100_000, learning_rate=6.3e-4, batch_size=128, buffer_size=50_000,
        learning_starts=0, gamma=0.99, target_update_interval=250, train_freq=4,
        gradient_steps=-1, exploration_fraction=0.12, exploration_final_eps=0.1,
        policy_kwargs=dict(net_arch=[256, 256])),
}


def train_dqn(opts, dqn_flags: list, log: EpisodeLog) -> dict:
    """dqn.main() with `python dqn.py`'s flags (or dqn_atari's); the training env is recorded."""
    sys.path.insert(0, REPO)
    dqn = importlib.import_module("dqn")
    module = importlib.import_module(opts.impl)  # dqn.py, or dqn_atari.py with its own parts
    parts = dict(getattr(module, "PARTS", {}))
    make_env, train, results = parts.get("make_env", dqn.make_env), dqn.train, []

    def make_recorded_env(args, num_envs, evaluation=False):
        """The training env, recorded (for dqn_atari.py beneath its LearningSignal: whole games,
        real scores); the evaluation env is not training, and not recorded."""
        envs = make_env(args, num_envs, evaluation)
        if evaluation:
            return envs
        if isinstance(envs, getattr(module, "LearningSignal", ())):
            envs.env = VectorEpisodeRecorder(envs.env, log)
            return envs
        return VectorEpisodeRecorder(envs, log)

    dqn.train = lambda *a, **kw: results.append(train(*a, **kw)) or results[-1]
    sys.argv = [f"{opts.impl}.py", "--env-id", opts.env_id, "--seed", str(opts.seed), "--output-dir", opts.out,
                *([] if opts.total_timesteps is None else ["--total-timesteps", str(opts.total_timesteps)]),
                *dqn_flags]
    named = module.__name__ == "dqn_atari"  # (its --preset)
    parts["make_env"] = make_recorded_env
    dqn.main(module.Args, module.PRESETS, named, **parts)  # exits on an error
    with open(os.path.join(results[0].output_dir, "summary.json")) as f:
        settings = json.load(f)["args"]
    return {"eval_returns": results[0].eval_returns, "settings": settings,
            "total_timesteps": settings["total_timesteps"]}


def train_sb3(opts, log: EpisodeLog) -> dict:
    import gymnasium as gym
    import numpy as np
    import stable_baselines3
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_vec_env

    if opts.env_id not in SB3_ZOO:
        sys.exit(f"error: no rl-zoo settings for {opts.env_id} here; known: {', '.join(SB3_ZOO)}")
    # Runs go in parallel, like dqn.py's, which trains on one CPU thread: so does this one.
    torch.set_num_threads(1)
    hp = dict(SB3_ZOO[opts.env_id])
    zoo_total = hp.pop("n_timesteps")
    total = zoo_total if opts.total_timesteps is None else opts.total_timesteps
    # As rl-zoo builds it: make_vec_env (Monitor, DummyVecEnv), the recorder around each env.
    envs = make_vec_env(opts.env_id, n_envs=1, seed=opts.seed, wrapper_class=EpisodeRecorder,
                        wrapper_kwargs={"log": log})
    model = DQN("MlpPolicy", envs, seed=opts.seed, device="cpu", verbose=0, **hp)
    model.learn(total_timesteps=total)
    envs.close()

    # Greedy evaluation on a separate env, with dqn.py's episode seeds.
    env, returns = gym.make(opts.env_id), []
    for episode in range(EVAL_EPISODES):
        obs, _ = env.reset(seed=opts.seed + 10_000 + episode)
        done, episode_return = False, 0.0
        while not done:
            action, _ = model.predict(np.asarray(obs), deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(int(action))
            episode_return += float(reward)
            done = terminated or truncated
        returns.append(episode_return)
    env.close()
    print(f"SB3 {stable_baselines3.__version__} DQN, {opts.env_id} seed {opts.seed}: {log.steps} env steps, "
          f"{log.episodes} episodes; greedy evaluation over {len(returns)} episodes: "
          f"{np.mean(returns):.1f} +- {np.std(returns):.1f}")
    hp["policy_kwargs"] = str(hp["policy_kwargs"])
    return {"eval_returns": returns, "total_timesteps": total,
            "settings": {"sb3_version": stable_baselines3.__version__, **hp}}


def exit_with_parent() -> None:
    """Ends this process if the one that started it dies (a Ray worker killed mid-run, say), so
    that no training outlives its runner. Polled: POSIX has no portable signal for it."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main():
    # allow_abbrev=False: a dqn.py flag is never taken for an abbreviation of one of these
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--impl", choices=["dqn", "dqn_atari", "sb3"], required=True)
    parser.add_argument("--env-id", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", required=True, help="directory for episodes.csv and summary.json")
    parser.add_argument("--launched", type=float, default=None,
                        help="unix time at which the process was launched (default: now)")
    parser.add_argument("--total-timesteps", type=int, default=None,
                        help="env steps to train for (default: dqn.py's preset, or rl-zoo's n_timesteps)")
    opts, rest = parser.parse_known_args()
    if opts.impl == "sb3" and rest:
        parser.error(f"unrecognised arguments for --impl sb3: {' '.join(rest)}")
    launched = time.time() if opts.launched is None else opts.launched
    exit_with_parent()
    os.makedirs(opts.out, exist_ok=True)

    log = EpisodeLog(os.path.join(opts.out, "episodes.csv"), launched)
    try:
        summary = train_sb3(opts, log) if opts.impl == "sb3" else train_dqn(opts, rest, log)
    finally:
        log.close()
    summary = {"impl": opts.impl, "env_id": opts.env_id, "seed": opts.seed, "launched": launched,
               "env_steps": log.steps, "episodes": log.episodes,
               "first_step_s": log.first_step_s, "last_step_s": log.last_step_s, **summary}
    with open(os.path.join(opts.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
