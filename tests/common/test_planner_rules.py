"""The documented rules of the CEM planners (sb3_mb.common.planners), each pinned so that breaking it fails.

The optimum tests of ``test_planners.py`` use separable objectives, where several rules give the same answer
(the mode of the categorical distribution is the best sequence there). Each test here is built so that the
documented rule and its plausible wrong variants disagree.
"""

import torch as th

from sb3_mb.common.planners import CategoricalCEM, GaussianCEM


def _needle_objective(needles: th.Tensor, good_first: th.Tensor):
    """Return 10 for the one ``needle`` sequence of each env, 1 for any other sequence that starts with
    ``good_first``, 0 otherwise. Many sequences start with ``good_first``, very few equal the needle: the
    elites are mostly "good first" ones, so the mode of the refitted first step is not the best sequence's."""

    def objective(one_hot: th.Tensor) -> th.Tensor:
        index = one_hot.argmax(-1)  # (batch, n_candidates, horizon)
        is_needle = (index == needles[:, None]).all(-1)
        good = index[..., 0] == good_first[:, None]
        return th.where(is_needle, 10.0, th.where(good, 1.0, 0.0))

    return objective


def test_categorical_cem_executes_the_best_sequence_not_the_mode():
    """CategoricalCEM: 'The executed action is the first step of the single best-return sequence of the last
    iteration, not the mode of the distribution.'"""
    needles = th.tensor([[0, 2, 2, 1], [2, 0, 0, 0]])  # 1 in 81 sequences: about 12 of 1000 candidates
    good_first = th.tensor([1, 0])  # 1 in 3 sequences: the other 88 elites
    cem = CategoricalCEM(planning_horizon=4, n_actions=3, n_candidates=1000, n_elites=100, n_iterations=1)
    result = cem.plan(
        _needle_objective(needles, good_first), cem.initial_plan(2), generator=th.Generator().manual_seed(0)
    )
    # The test means something only if the mode of the final distribution is not the best first action.
    th.testing.assert_close(result.plan[:, 0].argmax(-1), good_first)
    th.testing.assert_close(result.action_index, needles[:, 0])
    th.testing.assert_close(result.action, th.nn.functional.one_hot(needles[:, 0], 3).float())
    th.testing.assert_close(result.best_return, th.full((2,), 10.0))
    th.testing.assert_close(result.planned_return, th.full((2,), 10.0))  # the best, not the elite mean
    assert th.all(result.elite_returns[-1] < 10.0)


def test_categorical_cem_refits_logits_on_elite_frequencies():
    """``logits = log(frequency among the n_elites best + min_freq)``; the next iteration samples from them;
    the warm start is the final logits shifted one step with zeros appended."""
    g = th.Generator().manual_seed(1)
    batch, horizon, n_actions, n_elites = 2, 3, 4, 20
    scores = th.randn((batch, horizon, n_actions), generator=g)
    seen = []

    def objective(one_hot: th.Tensor) -> th.Tensor:
        seen.append(one_hot.clone())
        return (one_hot * scores[:, None]).sum(dim=(-1, -2))

    cem = CategoricalCEM(
        horizon, n_actions, n_candidates=200, n_elites=n_elites, n_iterations=2, min_freq=1e-3
    )
    result = cem.plan(objective, cem.initial_plan(batch), generator=th.Generator().manual_seed(2))

    def refit(candidates):
        top = objective(candidates).topk(n_elites, dim=1).indices
        elites = candidates[th.arange(batch)[:, None], top]
        return elites.mean(1)

    first_freq = refit(seen[0])
    # Actions no first-iteration elite took are (almost) never drawn again: probability ~ min_freq.
    unseen = first_freq == 0
    assert unseen.any()
    assert seen[1].sum(1)[unseen].sum() <= 1
    th.testing.assert_close(result.plan, th.log(refit(seen[1]) + 1e-3))
    th.testing.assert_close(result.warm_start[:, :-1], result.plan[:, 1:])
    assert th.all(result.warm_start[:, -1] == 0)


def test_categorical_cem_samples_the_categorical_of_its_logits():
    """'independent categorical samples per step (Gumbel-max, exact)': frequencies follow softmax(logits)."""
    probs = th.tensor([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    seen = []

    def objective(one_hot: th.Tensor) -> th.Tensor:
        seen.append(one_hot)
        return th.zeros(one_hot.shape[:2])

    cem = CategoricalCEM(2, 3, n_candidates=4000, n_elites=1, n_iterations=1)
    cem.plan(objective, th.log(probs)[None], generator=th.Generator().manual_seed(3))
    frequencies = seen[0][0].mean(0)  # (horizon, n_actions)
    th.testing.assert_close(frequencies, probs, rtol=0, atol=0.03)


def test_gaussian_cem_refits_mean_and_std_on_the_elites_with_min_var():
    """GaussianCEM: samples ``N(mean, std^2)`` (first ``mean = initial_plan``, ``std = initial_std``), refits
    on the ``n_elites`` best with ``std = sqrt(var + min_var)`` (population variance), executes the first
    step of the final mean. Replayed here with the same generator stream."""
    batch, horizon, dim, n, k = 2, 3, 2, 64, 5
    initial_std, min_var = 0.7, 0.3
    target = th.tensor([[[0.9, -0.8]] * horizon, [[-0.6, 0.5]] * horizon])

    def returns(actions: th.Tensor) -> th.Tensor:
        return -((actions - target[:, None]) ** 2).sum(dim=(-1, -2))

    seen = []
    cem = GaussianCEM(
        horizon,
        dim,
        n_candidates=n,
        n_elites=k,
        n_iterations=2,
        action_low=-100.0,  # no clipping: the candidates are exactly mean + std * noise
        action_high=100.0,
        initial_std=initial_std,
        min_var=min_var,
    )
    initial = 0.2 * th.randn((batch, horizon, dim), generator=th.Generator().manual_seed(4))
    result = cem.plan(
        lambda a: (seen.append(a.clone()), returns(a))[1], initial, generator=th.Generator().manual_seed(5)
    )

    g = th.Generator().manual_seed(5)
    noise = [th.randn((batch, n, horizon, dim), generator=g) for _ in range(2)]

    def refit(candidates):
        top = returns(candidates).argsort(dim=1, descending=True)[:, :k]
        elites = candidates[th.arange(batch)[:, None], top]
        return elites.mean(1), th.sqrt(elites.var(1, unbiased=False) + min_var)

    th.testing.assert_close(seen[0], initial[:, None] + initial_std * noise[0])
    mean, std = refit(seen[0])
    th.testing.assert_close(seen[1], mean[:, None] + std[:, None] * noise[1])
    mean, _ = refit(seen[1])
    th.testing.assert_close(result.plan, mean)
    th.testing.assert_close(result.action, mean[:, 0])
    elite_mean = returns(seen[1]).topk(k, dim=1).values.mean(1)
    th.testing.assert_close(result.planned_return, elite_mean)
