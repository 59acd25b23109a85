"""What reading the loss on the host costs a gradient step, on a CPU or a GPU.

    python benchmarks/host_reads.py                  # this CPU
    python benchmarks/host_reads.py --device cuda    # a GPU (benchmarks/atari_gpu.sh runs this)

dqn.gradient_step reads the loss (and the batch's mean Q) on the host at every step: its NaN
guard skips the step of a loss that is not finite, and train() stops the run there. On a GPU
such a read waits for the device to finish the step's work. This measures, for the Nature CNN
(dqn_atari.py, batch 32) and for dqn.py's MLP (CartPole's sizes, batch 128), the time of a
gradient step as dqn.gradient_step takes it against the same step with no read at all. The two
take turns in blocks of 10 steps, so that a change in the machine's load hits both alike (in
blocks of 50 a loaded machine gave figures from -4% to +70%); each block ends with the device's
work done. Figures are medians over the blocks.
"""

import argparse
import os
import sys
import time

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dqn  # noqa: E402
import dqn_atari  # noqa: E402


def setups(device: torch.device) -> dict:
    """name -> (online net, target net, Adam, a batch on the device, Args)."""
    made, gen = {}, torch.Generator().manual_seed(0)
    for name, module, space, args, batch_size in [
            ("Nature CNN, batch 32", dqn_atari, gym.spaces.Box(0, 255, (4, 84, 84), np.uint8),
             dqn_atari.Args(device=device.type), 32),
            ("MLP 128x128, batch 128", dqn, gym.spaces.Box(-1, 1, (4,), np.float32),
             dqn.Args(), 128)]:
        q = module.QNetwork(space, 4, args).to(device)
        target = module.QNetwork(space, 4, args).to(device)
        obs = [torch.randint(0, 256, (batch_size, *space.shape), generator=gen, dtype=torch.uint8)
               if space.dtype == np.uint8 else torch.randn(batch_size, *space.shape, generator=gen)
               for _ in range(2)]
        batch = (obs[0], torch.randint(0, 4, (batch_size,), generator=gen),
                 torch.zeros(batch_size), obs[1], torch.zeros(batch_size))
        optimizer = torch.optim.Adam(q.parameters(), lr=1e-4, fused=device.type in ("cpu", "cuda"))
        made[name] = q, target, optimizer, tuple(t.to(device) for t in batch), args
    return made


def step_without_read(q, target, optimizer, batch, args) -> None:
    """dqn.gradient_step's work, with nothing read on the host."""
    loss, _ = dqn.td_loss(q, target, batch, args.gamma ** args.n_step, args.loss, args.double_q)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def block_ms(step, setup, steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step(*setup)
    if device.type == "cuda":
        torch.cuda.synchronize()  # the device's queued work belongs to the block
    return 1000 * (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--blocks", type=int, default=200, help="blocks per way, taking turns")
    parser.add_argument("--steps", type=int, default=10, help="gradient steps per block")
    opts = parser.parse_args()
    device = torch.device(opts.device)
    torch.set_num_threads(1 if device.type == "cpu" else torch.get_num_threads())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU, 1 thread"
    print(f"{name}, torch {torch.__version__}: ms per gradient step, median over {opts.blocks} "
          f"blocks of {opts.steps}")
    ways = {"reads the loss (dqn.gradient_step)": dqn.gradient_step,
            "reads nothing": step_without_read}
    for label, setup in setups(device).items():
        times = {way: [] for way in ways}
        for block in range(opts.blocks + 1):
            for way, step in ways.items():
                ms = block_ms(step, setup, opts.steps, device)
                if block:  # the first block of each way warms up
                    times[way].append(ms)
        read, free = (float(np.median(t)) for t in times.values())
        print(f"{label}: {read:.3f} ms with the read, {free:.3f} ms without: the read costs "
              f"{100 * (read - free) / free:+.1f}% of a step")


if __name__ == "__main__":
    main()
