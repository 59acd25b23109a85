"""benchmarks/ablation.py: which runs it makes, and how it reads them. No training here: the
variants are checked as dqn.py parses them, the reading on made-up results."""

import os
import sys

import pytest

import dqn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import ablation  # noqa: E402
import run as runner  # noqa: E402


def parsed(env_id, flags):
    return dqn.parse_args(["--env-id", env_id, *flags])


@pytest.mark.parametrize("env_id", list(dqn.PRESETS))
def test_each_variant_sets_only_its_refinements_back_and_plain_dqn_is_args_at_the_budget(env_id):
    preset, plain = dqn.preset_args(env_id), dqn.Args()
    found = ablation.variants(env_id, together=("n_step", "double_q"))
    assert parsed(env_id, found.pop("preset")) == preset
    budget = dqn.Args(env_id=env_id, total_timesteps=preset.total_timesteps)
    assert parsed(env_id, found.pop("plain DQN (Args' defaults)")) == budget
    names = ablation.refinements(env_id)
    assert names and set(names) <= set(ablation.REFINEMENTS)
    for label, flags in found.items():
        args = parsed(env_id, flags)
        changed = {k for k, v in vars(args).items() if v != getattr(preset, k)}
        assert changed == ({"n_step", "double_q"} & set(names) if "all of" in label
                           else {names[list(found).index(label)]})
        assert all(getattr(args, k) == getattr(plain, k) for k in changed)


def test_a_refinement_is_neutral_when_its_removal_alone_moves_no_interval(monkeypatch):
    """Made-up CartPole results: without n-step returns, lower returns and slower; without
    Double DQN, the preset's figures again. Only the second is neutral, and only once every
    variant has the same seeds."""
    rliable, error = runner.load_rliable()
    if rliable is None:
        pytest.skip(f"rliable is not importable ({error})")
    monkeypatch.setattr(runner, "BOOTSTRAP_REPS", 500)
    results = []
    for label in ablation.variants("CartPole-v1"):
        worse = label.startswith("without n-step") or label.startswith("plain")
        for seed in range(1, 11):
            results.append({"env_id": "CartPole-v1", "label": label, "seed": seed,
                            "eval_mean": 300.0 + seed if worse else 490.0 + seed,
                            "solve_step": None if worse else 20_000 + 100 * seed,
                            "total_steps": 40_000, "solve_s": None if worse else 3.0 + seed / 10,
                            "seconds": [10.0]})
    names = ablation.refinements("CartPole-v1")
    assert ablation.neutral(results, "CartPole-v1", rliable) == tuple(
        name for name in names if name != "n_step")
    assert ablation.neutral(results[:-1], "CartPole-v1", rliable) == ()  # a seed still to come


def made_up(label, names, worse, cost=0, more=0.0):
    """10 seeds of made-up CartPole results for a variant without `names`: the preset's figures,
    `cost` more steps to solve and a greedy return `more` higher; or (worse) lower returns,
    unsolved."""
    return [{"env_id": "CartPole-v1", "label": label, "seed": seed,
             "eval_mean": 300.0 + seed if worse else 490.0 + seed + more,
             "solve_step": None if worse else 20_000 + 100 * seed + cost, "total_steps": 40_000,
             "solve_s": None if worse else 3.0 + seed / 10, "seconds": [10.0]}
            for seed in range(1, 11)]


@pytest.fixture
def rliable(monkeypatch):
    found, error = runner.load_rliable()
    if found is None:
        pytest.skip(f"rliable is not importable ({error})")
    monkeypatch.setattr(runner, "BOOTSTRAP_REPS", 500)
    return found


def alone(together, costs, all_of_worse=True):
    """The preset, each refinement out alone (neutral), and all of them out."""
    results = made_up("preset", (), False)
    for name in together:
        results += made_up(ablation.without(name)[0], (name,), False, costs[name])
    label = ablation.without_several(together, "without all of")[0]
    return results + made_up(label, together, all_of_worse)


def test_refinements_that_stand_in_for_one_another_are_taken_out_one_after_another(rliable):
    """Made-up CartPole results where any four refinements out together are as good as the
    preset, but not five: each step is measured in turn, the cheapest alone first, and the
    step that moves an interval keeps its refinement in."""
    together = ("double_q", "tau", "dueling", "hidden_sizes", "loss", "num_envs")
    costs = dict(zip(together, (30, 10, 20, 60, 50, 40)))  # the cheapest alone: tau, dueling
    results, measured = alone(together, costs), []
    while True:
        steps, out, next_step = ablation.one_after_another(results, "CartPole-v1", together,
                                                           rliable)
        assert steps == measured
        if next_step is None:
            break
        measured.append(next_step)
        label = ablation.without_several(next_step, "one after another, without")[0]
        results += made_up(label, next_step, len(next_step) > 4)
    assert measured == [("tau", "dueling"), ("tau", "dueling", "double_q"),
                        ("tau", "dueling", "double_q", "num_envs"),
                        ("tau", "dueling", "double_q", "num_envs", "loss"),
                        ("tau", "dueling", "double_q", "num_envs", "hidden_sizes")]
    assert out == ["tau", "dueling", "double_q", "num_envs"]  # a fifth out moved one
    label = ablation.without_several(measured[1], "one after another, without")[0]
    flags = ablation.variants("CartPole-v1", together, measured)[label]
    assert parsed("CartPole-v1", flags) == dqn.preset_args(
        "CartPole-v1", tau=1.0, dueling=False, double_q=False)
    turns = {"CartPole-v1": (measured, out, None)}
    table = ablation.page(results, ["CartPole-v1"], {"CartPole-v1": together}, turns, rliable)[0]
    assert table.count("| one after another, without: ") == 5
    assert ("One after another, the one whose removal alone cost the fewest steps first: out "
            "with no interval moving for the worse, Polyak target updates, dueling head, Double "
            "DQN, several envs; kept, wider hidden layers, MSE loss.") in table


def test_one_after_another_waits_for_all_of_them_out_and_stops_where_that_decides(rliable):
    """Nothing is taken out before the 'all of' row has the preset's seeds; if that row moved
    nothing, all go at once; with two refinements, the cheaper goes and the other stays."""
    together = ("double_q", "tau")
    costs = {"double_q": 20, "tau": 10}
    results = alone(together, costs)
    label = ablation.without_several(together, "without all of")[0]
    missing = [r for r in results if r["label"] != label]
    assert ablation.one_after_another(missing, "CartPole-v1", together, rliable) == ([], [], None)
    assert ablation.one_after_another(results, "CartPole-v1", together, rliable) == (
        [], ["tau"], None)
    results = alone(together, costs, all_of_worse=False)
    assert ablation.one_after_another(results, "CartPole-v1", together, rliable) == (
        [], ["double_q", "tau"], None)
    turns = {"CartPole-v1": ([], ["double_q", "tau"], None)}
    table = ablation.page(results, ["CartPole-v1"], {"CartPole-v1": together}, turns, rliable)[0]
    assert "All of them at once: out with no interval moving for the worse, Double DQN" in table


def test_a_step_that_loses_what_the_last_step_gained_keeps_its_refinement(rliable):
    """Made-up results where the first step out does better than the preset (kept: better is
    not a move for the worse) and the next falls back to the preset's figures: within the
    preset's intervals, but apart from the last step kept's, so its refinement stays in. Small
    losses, each within the preset's intervals, must not add up."""
    together = ("double_q", "tau", "dueling", "num_envs")
    costs = {"tau": 10, "double_q": 20, "dueling": 30, "num_envs": 40}
    results = alone(together, costs)
    first = ("tau", "double_q")
    label = ablation.without_several(first, "one after another, without")[0]
    results += made_up(label, first, False, more=40.0)
    steps, out, next_step = ablation.one_after_another(results, "CartPole-v1", together, rliable)
    assert (steps, out) == ([first], ["tau", "double_q"])
    assert next_step == ("tau", "double_q", "dueling")
    label = ablation.without_several(next_step, "one after another, without")[0]
    results += made_up(label, next_step, False)
    steps, out, next_step = ablation.one_after_another(results, "CartPole-v1", together, rliable)
    assert out == ["tau", "double_q"]  # dueling stays in
    assert next_step == ("tau", "double_q", "num_envs")


@pytest.mark.parametrize("env_id", ablation.ENVS)
def test_the_pages_runs_are_in_the_repo_and_ran_the_preset_dqn_py_has_now(env_id):
    """docs/ablation.md is made from the records in benchmarks/results/ablation: a clean clone
    has them (--table-only reads them back), every variant of every preset at 10 seeds or more,
    and a preset changed since fails here until the ablation runs it again."""
    out = os.path.join(os.path.dirname(ablation.HERE), "benchmarks", "results", "ablation")
    found = {label: 0 for label in ablation.variants(env_id)}
    for run in ablation.plan([env_id], 20, {}):
        found[run["label"]] += ablation.kept(out, run) is not None
    assert found == {label: max(found.values()) for label in found}
    assert found["preset"] >= ablation.MIN_SEEDS
