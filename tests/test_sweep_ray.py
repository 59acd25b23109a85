"""benchmarks/run.py --ray: the same sweep as Ray tasks, with every run accounted for, even when
a worker dies mid-run or the driver is interrupted. Each test starts Ray on this machine
through run.py (which shuts it down again) and skips where Ray is not installed."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("ray")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(REPO, "benchmarks", "run.py")


def sweep(out, *flags, timeout=240):
    """benchmarks/run.py with `flags`, to completion; returns the finished process."""
    return subprocess.run([sys.executable, RUN, "--out", str(out), *flags],
                          capture_output=True, text=True, timeout=timeout)


def start_sweep(out, *flags):
    return subprocess.Popen([sys.executable, RUN, "--out", str(out), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def table_form(md: str) -> list:
    """What a results.md has whatever the numbers: each table line cut to its first three
    cells (implementation, env, seeds) and its number of cells, then the notes."""
    lines = md.splitlines()[1:]  # after the "Produced by" line, which says how it ran
    return [line.split(" | ")[:3] + [line.count("|")] if line.startswith("|") else line for line in lines]


def processes() -> dict:
    """pid -> (parent pid, command line) of every live process on this machine."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # ended while we looked
        if stat[0] != "Z":
            found[int(pid)] = (int(stat[1]), cmdline)
    return found


def running_tasks(timeout=120) -> dict:
    """Waits for Ray workers that are training a run; returns {worker pid: train_one.py pid}."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        procs = processes()
        tasks = {ppid: pid for pid, (ppid, cmd) in procs.items()
                 if "train_one.py" in cmd and procs.get(ppid, (0, ""))[1].startswith("ray::train_task")}
        if tasks:
            return tasks
        time.sleep(0.2)
    raise TimeoutError("no Ray task started training")


def wait_gone(pids, timeout=15) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not set(pids) & set(processes()):
            return True
        time.sleep(0.2)
    return False


def test_quick_sweep_through_ray_matches_a_local_one(tmp_path):
    """--quick, made tiny, once on this machine and once through a Ray it starts: the same
    table, row for row, and every planned run written back with its files; then --reuse on
    the local path finds every run the Ray path wrote and trains none again."""
    quick = ["--quick", "--seeds", "1", "--total-timesteps", "1500"]
    local, ray = sweep(tmp_path / "local", *quick), sweep(tmp_path / "ray", *quick, "--ray")
    assert local.returncode == 0, local.stdout + local.stderr
    assert ray.returncode == 0, ray.stdout + ray.stderr
    local_md, ray_md = ((tmp_path / name / "results.md").read_text(encoding="utf-8") for name in ["local", "ray"])
    assert table_form(ray_md) == table_form(local_md)
    assert "as Ray tasks of 1 CPU each" in ray_md.splitlines()[0]

    results = json.loads((tmp_path / "ray" / "results.json").read_text(encoding="utf-8"))
    impls = sorted(r["impl"] for r in json.loads((tmp_path / "local" / "results.json").read_text(encoding="utf-8")))
    assert sorted(r["impl"] for r in results) == impls  # every run accounted for
    for r in results:
        assert r["error"] is None and r["eval_mean"] is not None
        run_dir = tmp_path / "ray" / "runs" / r["variant"] / "CartPole-v1" / "seed1"
        assert {"episodes.csv", "summary.json", "stdout.txt", "run.json"} <= set(os.listdir(run_dir))

    again = sweep(tmp_path / "ray", *quick, "--reuse")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{len(results)} runs ({len(results)} finished before)" in again.stdout
    assert table_form((tmp_path / "ray" / "results.md").read_text(encoding="utf-8")) == table_form(local_md)


LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="finds the runs' processes in /proc, which only Linux has")


@LINUX_ONLY
@pytest.mark.parametrize("kills", [1, 4])
def test_a_killed_worker_is_retried_or_shown_failed(tmp_path, kills):
    """SIGKILL the worker of a run in the middle of its training, `kills` times: once, Ray
    trains the run again and it finishes; past Ray's 3 retries, the run is a failed row
    with Ray's error. Either way it is in the table, and no training outlives its worker."""
    proc = start_sweep(tmp_path, "--quick", "--seeds", "1", "--no-sb3", "--total-timesteps", "20000", "--ray")
    try:
        for _ in range(kills):
            [(worker, training)] = running_tasks().items()
            os.kill(worker, signal.SIGKILL)
            assert wait_gone([worker, training])
        output, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    md = (tmp_path / "results.md").read_text(encoding="utf-8")
    [row] = [line for line in md.splitlines() if line.startswith("| dqn.py | CartPole-v1 (threshold")]
    if kills == 1:
        assert proc.returncode == 0, output
        assert row.split(" | ")[2] == "1" and row.endswith("| - |")
        summary = json.loads((tmp_path / "runs" / "dqn" / "CartPole-v1" / "seed1" / "summary.json").read_text(encoding="utf-8"))
        assert summary["env_steps"] >= 20000
    else:
        assert proc.returncode == 1, output
        assert row.split(" | ")[2] == "0 of 1" and "seed 1: WorkerCrashedError" in row
        assert "1 of 1 runs failed" in output


@LINUX_ONLY
def test_ctrl_c_cancels_the_runs_it_started(tmp_path):
    """SIGINT to the driver while its runs train: it exits with 130 and no training goes on."""
    proc = start_sweep(tmp_path, "--quick", "--no-sb3", "--total-timesteps", "50000", "--ray")
    try:
        tasks = running_tasks()
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, output
    assert "interrupted: cancelled the 2 runs not finished" in output
    assert wait_gone([*tasks, *tasks.values()])
