"""How fast dqn_atari.py runs on this machine, and why it is built the way it is.

    python benchmarks/atari_speed.py            # a few minutes on 2 CPU cores
    python benchmarks/atari_speed.py --quick    # a rough pass, under a minute
    python benchmarks/atari_speed.py --cleanrl /tmp/cleanrl-venv/bin/python /tmp/cleanrl/dqn_atari.py

Measures, side by side in one process so that a loaded machine slows all alike:
  1. env steps/s with the full DQN preprocessing (random actions): ale-py's
     AtariVectorEnv (1 and 2 envs) against gymnasium's AtariPreprocessing +
     FrameStackObservation (needs opencv-python; skipped without it),
  2. the time of one batch-32 Nature-CNN update (target forward, forward, backward,
     Adam) with 1 or 2 torch threads, with and without channels_last weights, and in bfloat16,
  3. steps/s of dqn_atari.train() once training has started, at CleanRL's settings
     (batch 32, one update every 4 env steps, epsilon 0.92 as CleanRL's at step 80k),
     in float32 and with --bf16,
  4. the bytes the replay buffer allocates for 1M transitions.
Numbers are medians over rounds; compare them only within one run.

--cleanrl PYTHON SCRIPT also runs CleanRL's dqn_atari.py (it needs gymnasium 0.29 and
numpy < 2, so its own venv) in rounds alternating with dqn_atari.py's, from SCRIPT's
"SPS: ... step S time T" lines (upstream prints only "SPS:"; add step and time.time()),
with --buffer-size 100000 (its 1M layout needs 28 GB), once with its default torch
threads and once with OMP_NUM_THREADS=1.
"""

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dqn  # noqa: E402
import dqn_atari  # noqa: E402

GAME, ENV_ID = "breakout", "BreakoutNoFrameskip-v4"


def vector_env(num_envs):
    return dqn_atari.make_env(dqn_atari.Args(env_id=ENV_ID), num_envs)


def gymnasium_env(num_envs):
    """The same preprocessing from gymnasium's Python wrappers (cv2 resize)."""
    def make():
        env = gym.make(ENV_ID, max_num_frames_per_episode=108_000)
        env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84)
        return gym.wrappers.FrameStackObservation(env, 4, padding_type="zero")
    return gym.vector.SyncVectorEnv([make] * num_envs)


def env_steps_per_s(make, num_envs, steps):
    envs = make(num_envs)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    n_actions = envs.single_action_space.n
    start = time.perf_counter()
    for _ in range(steps // num_envs):
        envs.step(rng.integers(0, n_actions, size=num_envs))
    elapsed = time.perf_counter() - start
    envs.close()
    return steps // num_envs * num_envs / elapsed


def update_ms(configs, updates):
    """Median ms of one batch-32 update for each (threads, channels_last, bf16) config, the
    configs taking turns update by update so that a change in load hits them alike."""
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    rng = torch.Generator().manual_seed(0)
    batch = (torch.randint(0, 256, (32, 4, 84, 84), dtype=torch.uint8, generator=rng),
             torch.randint(0, 4, (32,), generator=rng), torch.zeros(32),
             torch.randint(0, 256, (32, 4, 84, 84), dtype=torch.uint8, generator=rng), torch.zeros(32))
    nets = {}
    for threads, channels_last, bf16 in configs:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        q, target = (dqn_atari.QNetwork(space, 4, dqn_atari.Args(bf16=bf16)).to(memory_format=fmt)
                     for _ in range(2))
        nets[threads, channels_last, bf16] = q, target, torch.optim.Adam(q.parameters(), lr=1e-4, fused=True)
    times = {c: [] for c in configs}
    for i in range(updates + 2):
        for (threads, channels_last, bf16), (q, target, optimizer) in nets.items():
            torch.set_num_threads(threads)
            start = time.perf_counter()
            loss, _ = dqn.td_loss(q, target, batch, 0.99, "huber", double_q=False)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if i >= 2:  # warm-up
                times[threads, channels_last, bf16].append(time.perf_counter() - start)
    torch.set_num_threads(1)
    return {c: 1000 * float(np.median(t)) for c, t in times.items()}


def training_steps_per_s(learning_starts, train_steps, out, threads=0, device="cpu", num_envs=1, bf16=False):
    """Steps/s between the first and last game that ended after learning started."""
    args = dqn_atari.Args(  # CleanRL's settings (the defaults are the Nature paper's)
        optimizer="adam", learning_rate=1e-4, target_network_frequency=1_000,
        env_id=ENV_ID, total_timesteps=learning_starts + train_steps, learning_starts=learning_starts,
        buffer_size=1_000_000, start_e=0.92, end_e=0.92, eval_episodes=0, save_model=False,
        output_dir=out, log_interval=10**9, device=device, torch_threads=threads or os.cpu_count(),
        num_envs=num_envs, bf16=bf16,
    )
    results = dqn_atari.train(args, verbose=False)
    with open(os.path.join(results.output_dir, "metrics.csv")) as f:
        rows = [(int(r["step"]), float(r["time_s"])) for r in csv.DictReader(f)]
    rows = [r for r in rows if r[0] > learning_starts + 100]
    if len(rows) < 2:
        return float("nan")
    return (rows[-1][0] - rows[0][0]) / (rows[-1][1] - rows[0][1])


def cleanrl_steps_per_s(python, script, learning_starts, train_steps, threads=None):
    """Steps/s of CleanRL's loop between its first and last SPS line after learning started."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    proc = subprocess.run(
        [python, script, "--total-timesteps", str(learning_starts + train_steps), "--learning-starts",
         str(learning_starts), "--start-e", "0.92", "--end-e", "0.92", "--buffer-size", "100000"],
        capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), timeout=1200)
    points = [(int(w[3]), float(w[5])) for w in (line.split() for line in proc.stdout.splitlines())
              if len(w) == 6 and w[0] == "SPS:" and int(w[3]) > learning_starts + 100]
    if len(points) < 2:
        print(proc.stdout[-2000:], proc.stderr[-2000:])
        return float("nan")
    return (points[-1][0] - points[0][0]) / (points[-1][1] - points[0][1])


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform
        return platform.processor() or platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    parser.add_argument("--cleanrl", nargs=2, metavar=("PYTHON", "SCRIPT"),
                        help="also time CleanRL's dqn_atari.py, side by side")
    parser.add_argument("--device", default="cpu",
                        help="cuda: only the training steps/s, on the GPU, with 1, 8 and 16 envs")
    opts = parser.parse_args()
    if opts.cleanrl and not (shutil.which(opts.cleanrl[0]) and os.path.isfile(opts.cleanrl[1])):
        parser.error(f"--cleanrl {' '.join(opts.cleanrl)}: give a Python and CleanRL's "
                     "dqn_atari.py")
    try:
        dqn.check_setup(dqn_atari.Args(device=opts.device), dqn_atari.make_env)
    except dqn.UsageError as e:
        parser.error(str(e))
    rounds, env_steps, updates, train_steps = (1, 1_000, 10, 1_000) if opts.quick else (3, 3_000, 30, 1_500)
    if opts.device != "cpu":  # (benchmarks/atari_gpu.sh) batch 32, an update every 4 env steps, as CleanRL
        for num_envs, bf16 in [(1, False), (8, False), (16, False), (8, True)]:
            with tempfile.TemporaryDirectory() as out:
                sps = training_steps_per_s(5_000, 10 * train_steps, out, device=opts.device, num_envs=num_envs,
                                           bf16=bf16)
            print(f"training steps/s on {opts.device}, {num_envs} envs{', --bf16' if bf16 else ''} "
                  f"(batch 32, train every 4): {sps:.1f}", flush=True)
        return
    torch.set_num_threads(1)
    rows = []

    try:
        gymnasium_env(1).close()
        candidates = [("gymnasium wrappers, 1 env", gymnasium_env, 1)]
    except gym.error.DependencyNotInstalled as e:
        print(f"skipping gymnasium's AtariPreprocessing: {e}")
        candidates = []
    candidates += [("ale-py AtariVectorEnv, 1 env", vector_env, 1),
                   ("ale-py AtariVectorEnv, 2 envs", vector_env, 2)]
    results = {name: [] for name, _, _ in candidates}
    for _ in range(rounds):  # interleaved, so that load changes hit every candidate
        for name, make, n in candidates:
            results[name].append(env_steps_per_s(make, n, env_steps))
    rows += [(f"env steps/s: {name}", f"{np.median(v):,.0f}") for name, v in results.items()]

    times = update_ms([(1, False, False), (1, True, False), (2, False, False), (2, True, False), (2, True, True)],
                      updates)
    rows += [(f"update ms, batch 32: {t} thread{'s' if t > 1 else ''}, "
              f"{'channels_last' if cl else 'contiguous'}{', bf16' if bf16 else ''}", f"{ms:.1f}")
             for (t, cl, bf16), ms in times.items()]

    ours, ours_bf16, ours_1, theirs, theirs_1 = [], [], [], [], []
    for _ in range(rounds if opts.cleanrl else 1):  # alternating, so that load hits both alike
        with tempfile.TemporaryDirectory() as out:
            ours.append(training_steps_per_s(1_000, train_steps, out))
        with tempfile.TemporaryDirectory() as out:
            ours_bf16.append(training_steps_per_s(1_000, train_steps, out, bf16=True))
        with tempfile.TemporaryDirectory() as out:
            ours_1.append(training_steps_per_s(1_000, train_steps, out, threads=1))
        if opts.cleanrl:
            theirs.append(cleanrl_steps_per_s(*opts.cleanrl, 1_000, train_steps))
            theirs_1.append(cleanrl_steps_per_s(*opts.cleanrl, 1_000, train_steps, threads=1))
    sps = np.median(ours)
    rows.append(("training steps/s (batch 32, train every 4): dqn_atari.py", f"{sps:.1f}"))
    rows.append(("training steps/s: dqn_atari.py --bf16", f"{np.median(ours_bf16):.1f}"))
    rows.append(("training steps/s: dqn_atari.py --torch-threads 1", f"{np.median(ours_1):.1f}"))
    if opts.cleanrl:
        best = max(np.median(theirs), np.median(theirs_1))
        rows.append(("training steps/s: CleanRL, default torch threads", f"{np.median(theirs):.1f}"))
        rows.append(("training steps/s: CleanRL, OMP_NUM_THREADS=1", f"{np.median(theirs_1):.1f}"))
        rows.append(("  dqn_atari.py / CleanRL's faster setting, same run", f"{sps / best:.2f}x"))
        rows.append(("  dqn_atari.py --bf16 / CleanRL's faster setting, same run",
                     f"{np.median(ours_bf16) / best:.2f}x"))

    rb = dqn_atari.ReplayBuffer(gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), dqn_atari.Args(), seed=0)
    nbytes = sum(a.nbytes for a in (rb.frames, rb.actions, rb.rewards, rb.terminated, rb.first))
    rows.append(("replay buffer, 1M transitions, allocated GB", f"{nbytes / 1e9:.3f}"))

    rows.append(("CPU", cpu_name()))
    rows.append(("  torch's CPU capability; bfloat16 instructions (AVX-512 BF16 or AMX)",
                 f"{torch.backends.cpu.get_cpu_capability()}; "
                 f"{'yes' if dqn_atari.bf16_instructions() else 'no: --bf16 computes in float32'}"))
    width = max(len(name) for name, _ in rows)
    print(f"\n{'measure':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"\nProduced by: python benchmarks/atari_speed.py {' '.join(sys.argv[1:])}\n"
          f"on {time.strftime('%Y-%m-%d')} ({rounds} rounds), {os.cpu_count()} cores, "
          f"torch {torch.__version__}, gymnasium {gym.__version__}, numpy {np.__version__}")
    if opts.cleanrl:
        versions = subprocess.run([opts.cleanrl[0], "-c", "import gymnasium, numpy, ale_py, torch; "
                                   "print('gymnasium', gymnasium.__version__, 'numpy', numpy.__version__, "
                                   "'ale-py', ale_py.__version__, 'torch', torch.__version__)"],
                                  capture_output=True, text=True).stdout.strip()
        print(f"CleanRL's dqn_atari.py ({opts.cleanrl[1]}) in its own venv: {versions}, "
              "--buffer-size 100000 (its 1M layout needs 28 GB)")


if __name__ == "__main__":
    main()
