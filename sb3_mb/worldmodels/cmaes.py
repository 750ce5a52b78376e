"""Training C with CMA-ES (Ha & Schmidhuber 2018, arXiv:1803.10122, Sec. 3.3 and App. A.3; Hansen 2016,
arXiv:1604.00772), with the ``cma`` library.

A generation: CMA-ES proposes ``population_size`` candidate weight vectors of C (paper: 64); each is scored
by the mean return of ``rollouts_per_candidate`` episodes (paper: 16) in the real env or in the dream; the
returns are told to CMA-ES (which minimises, so it gets their negatives). C is then set to the distribution's
mean (``xfavorite``; estool's ``current_param``, which the original evaluates and saves).

The episodes of candidate ``i`` in generation ``g`` are seeded from ``(seed, g, i)`` alone
(``numpy.random.SeedSequence``), and every candidate is scored by the same function whether it runs here
or in a worker, so a generation's result does not depend on ``n_workers`` nor on which worker scores which
candidate. Workers (``parallel_backend``) are local processes (``"processes"``: ``multiprocessing``,
``forkserver`` where available, else ``spawn``) or the actors of a Ray cluster (``"ray"``, the ``ray`` extra:
the paper's 64-worker runs spread over machines), each with one torch thread; they rebuild the policy from
its constructor arguments and weights once per stage.
"""

from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
import torch as th

from sb3_mb.worldmodels.dream import DreamEnv
from sb3_mb.worldmodels.policies import WorldModelsPolicy

__all__ = [
    "PARALLEL_BACKENDS",
    "BatchedRolloutEvaluator",
    "ControllerES",
    "RolloutEvaluator",
    "evaluate_population",
    "make_pool",
]

#: Where the worker processes run: local processes, or the actors of a Ray cluster.
PARALLEL_BACKENDS = ("processes", "ray")


def _import_cma() -> Any:
    """The ``cma`` package (the ``wm`` extra), imported on first use so that ``import sb3_mb`` works without.

    :raises ImportError: saying how to install it.
    """
    try:
        with warnings.catch_warnings():  # cma warns at import that matplotlib (for cma.plot) is missing
            warnings.filterwarnings("ignore", message="Could not import matplotlib", category=UserWarning)
            import cma
    except ImportError as error:  # pragma: no cover - the tests install it
        raise ImportError(
            "World Models trains its controller with CMA-ES from the cma package: pip install 'sb3-mb[wm]'"
        ) from error
    return cma


def import_ray() -> Any:
    """The ``ray`` package (the ``ray`` extra), imported on first use.

    :raises ImportError: saying how to install it.
    """
    try:
        import ray
    except ImportError as error:
        raise ImportError(
            "parallel_backend='ray' scores the candidates on a Ray cluster and needs Ray: "
            "pip install 'sb3-mb[ray]'"
        ) from error
    return ray


class ControllerES:
    """CMA-ES over C's weights (``cma.CMAEvolutionStrategy``), its own RNG, and the rollout seeds.

    It pickles whole (CMA-ES's mean, step size, covariance, evolution paths, generation counter and RNG
    state), so a saved agent resumes its controller training where it stopped.

    :param x0: starting mean ``(n_parameters,)`` (the original: zeros).
    :param population_size: candidates per generation (paper: 64).
    :param sigma0: initial step size (the original's ``sigma_init``: 0.1).
    :param seed: seeds CMA-ES's sampling and the rollout seeds.
    :raises ValueError: for ``population_size < 2`` or fewer than 2 parameters.
    """

    def __init__(self, x0: np.ndarray, population_size: int = 64, sigma0: float = 0.1, seed: int = 0):
        x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
        if population_size < 2:
            raise ValueError(f"population_size must be >= 2, got {population_size}")
        if x0.size < 2:
            raise ValueError(f"CMA-ES needs at least 2 parameters, got {x0.size}")
        self.population_size, self.seed = population_size, int(seed)
        cma = _import_cma()
        rng = np.random.RandomState(self.seed)
        # 'randn' from our own RandomState: cma then leaves NumPy's global RNG alone (seed=nan: no reseeding).
        self.es = cma.CMAEvolutionStrategy(
            x0, sigma0, {"popsize": population_size, "randn": rng.randn, "seed": np.nan, "verbose": -9}
        )
        self.best_return = -np.inf

    @property
    def generation(self) -> int:
        """Generations told so far."""
        return int(self.es.countiter)

    @property
    def mean(self) -> np.ndarray:
        """The search distribution's mean ``(n_parameters,)``: the weights C takes."""
        return np.asarray(self.es.result.xfavorite, dtype=np.float64)

    @property
    def sigma(self) -> float:
        """CMA-ES's current step size."""
        return float(self.es.sigma)

    def ask(self) -> np.ndarray:
        """The candidates of the next generation, ``(population_size, n_parameters)``."""
        return np.asarray(self.es.ask(), dtype=np.float64)

    def rollout_seeds(self, candidate: int, n_rollouts: int) -> list[int]:
        """Env seeds of candidate ``candidate``'s episodes in the coming generation (from seed, generation and
        candidate only)."""
        sequence = np.random.SeedSequence([self.seed, self.generation, candidate])
        return [int(s) for s in sequence.generate_state(n_rollouts)]

    def tell(self, candidates: np.ndarray, returns: Sequence[float]) -> dict[str, float]:
        """Tell CMA-ES the candidates' mean returns (it minimises their negatives).

        :return: the generation's statistics: ``best`` and ``mean`` return of the population, ``sigma``
            after the update, ``best_ever``.
        """
        returns = np.asarray(returns, dtype=np.float64)
        self.es.tell(list(candidates), list(-returns))
        self.best_return = max(self.best_return, float(returns.max()))
        return {
            "best": float(returns.max()),
            "mean": float(returns.mean()),
            "sigma": self.sigma,
            "best_ever": self.best_return,
        }


# ---------------------------------------------------------------------------------------------- rollouts
@dataclass
class RolloutEvaluator:
    """Scores a candidate of C: mean return of its episodes, in the real env or in the dream.

    :ivar policy: the policy whose V and M C runs on (its ``controller`` is overwritten by each candidate).
    :ivar env: a Gymnasium env: the real env (observations through V and M, as ``predict``) or a
        :class:`~sb3_mb.worldmodels.dream.DreamEnv` (observations are already ``[z, h]``).
    :ivar max_episode_steps: cut each episode after this many steps (None: the env's own limit).
    """

    policy: WorldModelsPolicy
    env: gym.Env
    max_episode_steps: int | None = None
    env_steps: int = field(default=0)

    @th.no_grad()
    def episode_return(self, seed: int) -> float:
        """Undiscounted return of one episode with C's deterministic action (posterior mean of ``z``)."""
        env, policy, dream = self.env, self.policy, isinstance(self.env, DreamEnv)
        obs, _ = env.reset(seed=seed)
        state, total, t = None, 0.0, 0
        while True:
            if dream:
                features = th.as_tensor(obs[None], dtype=th.float32, device=policy.device)
                action = policy.controller_action(features)[0][0]
            else:
                action, state = policy.predict(obs, state, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            t += 1
            if (
                terminated
                or truncated
                or (self.max_episode_steps is not None and t >= self.max_episode_steps)
            ):
                break
        self.env_steps += t
        return total

    def evaluate(self, candidate: np.ndarray, seeds: Sequence[int]) -> float:
        """Mean return of C with weights ``candidate`` over episodes seeded with ``seeds``."""
        self.policy.controller.set_vector(candidate)
        return float(np.mean([self.episode_return(seed) for seed in seeds]))


@dataclass
class BatchedRolloutEvaluator:
    """Scores many candidates' episodes in lockstep in the real env (issue 15): ``len(envs)`` episodes at a
    time, each in its own env, with one batched call of V's encoder, C (every episode with its own
    candidate's weights, :meth:`~sb3_mb.worldmodels.policies.Controller.batched`) and M's LSTM step per step
    instead of one call per episode; the envs themselves still step one after the other.

    Each episode is the one :class:`RolloutEvaluator` plays (the same seed, C's deterministic action, the
    same order of V, C and M within a step); its return agrees with it to float32 rounding of the batched
    matmuls and convolutions (tests/worldmodels/test_worldmodels_speed.py).

    :ivar policy: the policy whose V and M every candidate's C runs on (its own ``controller`` untouched).
    :ivar envs: real Gymnasium envs as the policy sees them, all alike (from ``controller_env_fn``).
    :ivar max_episode_steps: cut each episode after this many steps (None: the env's own limit).
    """

    policy: WorldModelsPolicy
    envs: list[gym.Env]
    max_episode_steps: int | None = None
    env_steps: int = field(default=0)

    def evaluate_population(self, candidates: np.ndarray, seeds: Sequence[Sequence[int]]) -> np.ndarray:
        """Mean returns ``(population,)`` of ``candidates (population, n_parameters)``, candidate ``i`` over
        the episodes seeded with ``seeds[i]`` (:meth:`RolloutEvaluator.evaluate` for each)."""
        tasks = [(i, int(seed)) for i, candidate_seeds in enumerate(seeds) for seed in candidate_seeds]
        totals: list[float] = []
        for start in range(0, len(tasks), len(self.envs)):
            chunk = tasks[start : start + len(self.envs)]
            totals += self.episode_returns(candidates[[i for i, _ in chunk]], [seed for _, seed in chunk])
        returns, k = [], 0
        for candidate_seeds in seeds:
            returns.append(float(np.mean(totals[k : k + len(candidate_seeds)])))
            k += len(candidate_seeds)
        return np.array(returns)

    @th.inference_mode()
    def episode_returns(self, vectors: np.ndarray, seeds: Sequence[int]) -> list[float]:
        """Undiscounted returns of ``len(seeds)`` episodes played together, episode ``k`` by C with the
        weights ``vectors[k]`` in ``envs[k]`` reset with ``seeds[k]``.

        :raises ValueError: for more episodes than envs.
        :raises FloatingPointError: for an observation holding NaN or inf (as ``predict``).
        """
        policy, n = self.policy, len(seeds)
        if n > len(self.envs):
            raise ValueError(f"{n} episodes need as many envs, got {len(self.envs)}")
        policy.set_training_mode(False)
        device = policy.device
        weights = th.as_tensor(np.asarray(vectors, dtype=np.float64), dtype=th.float32, device=device)
        observations = [env.reset(seed=seed)[0] for env, seed in zip(self.envs, seeds, strict=False)]
        h = th.zeros(n, policy.hidden_size, device=device)
        c = th.zeros(n, policy.hidden_size, device=device)
        totals, steps, active = [0.0] * n, [0] * n, list(range(n))
        while active:
            batch = np.stack([policy._channel_first(np.asarray(observations[k])) for k in active])
            if np.issubdtype(batch.dtype, np.floating) and not np.all(np.isfinite(batch)):
                raise FloatingPointError("WorldModels: an episode's observation holds NaN or inf")
            rows = th.as_tensor(active, device=device)
            z, _ = policy.vae.encode(policy.obs_to_tensor(np.ascontiguousarray(batch))[0])
            hidden = (h[rows], c[rows])
            features = policy.controller_features(th.cat([z, hidden[0]], dim=-1))
            actions, m_actions = policy.outputs_to_action(policy.controller.batched(weights[rows], features))
            h[rows], c[rows] = policy.mdn_rnn.step(z, m_actions, hidden)
            still = []
            for j, k in enumerate(active):
                action = actions[j : j + 1].squeeze(axis=0)  # as predict's unbatched action
                observations[k], reward, terminated, truncated, _ = self.envs[k].step(action)
                totals[k] += float(reward)
                steps[k] += 1
                cut = self.max_episode_steps is not None and steps[k] >= self.max_episode_steps
                if not (terminated or truncated or cut):
                    still.append(k)
            active = still
        self.env_steps += sum(steps)
        return totals

    def close(self) -> None:
        for env in self.envs:
            env.close()


@dataclass
class WorkerSpec:
    """What a worker process needs to rebuild a :class:`RolloutEvaluator`: cloudpickled once per stage."""

    policy_class: type[WorldModelsPolicy]
    policy_parameters: dict[str, Any]
    state_dict: dict[str, th.Tensor]
    make_env: Callable[[WorldModelsPolicy], gym.Env]
    max_episode_steps: int | None

    def build(self) -> RolloutEvaluator:
        policy = self.policy_class(**self.policy_parameters)
        policy.load_state_dict(self.state_dict)
        policy.set_training_mode(False)
        return RolloutEvaluator(policy, self.make_env(policy), self.max_episode_steps)


class _Worker:
    """A worker's :class:`RolloutEvaluator`, built from a cloudpickled :class:`WorkerSpec`, one torch thread.

    An error while building is kept and raised by the first task: a failing pool initializer would make
    multiprocessing replace the worker forever instead of reporting it.
    """

    def __init__(self, payload: bytes):
        th.set_num_threads(1)
        self.evaluator: RolloutEvaluator | None = None
        self.error: BaseException | None = None
        try:
            self.evaluator = cloudpickle.loads(payload).build()
        except Exception as error:
            self.error = error

    def evaluate(self, task: tuple[np.ndarray, list[int]]) -> tuple[float, int]:
        """``(mean return, env steps taken)`` of the ``(candidate, seeds)`` task."""
        if self.error is not None:
            raise RuntimeError(
                f"the worker could not build its policy and env: {self.error!r}"
            ) from self.error
        assert self.evaluator is not None
        before = self.evaluator.env_steps
        value = self.evaluator.evaluate(*task)
        return value, self.evaluator.env_steps - before


_WORKER: _Worker | None = None  # the process pool's worker, one per process


def _init_worker(payload: bytes) -> None:
    global _WORKER
    _WORKER = _Worker(payload)


def _evaluate_in_worker(task: tuple[np.ndarray, list[int]]) -> tuple[float, int]:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.evaluate(task)


class ProcessWorkers:
    """``n_workers`` local processes, each holding the :class:`RolloutEvaluator` of ``spec``."""

    def __init__(self, n_workers: int, spec: WorkerSpec):
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        self._pool = context.Pool(n_workers, initializer=_init_worker, initargs=(cloudpickle.dumps(spec),))

    def map(self, tasks: list[tuple[np.ndarray, list[int]]]) -> list[tuple[float, int]]:
        """``(mean return, env steps)`` of each ``(candidate, seeds)`` task, in the order of ``tasks``."""
        return self._pool.map(_evaluate_in_worker, tasks, chunksize=1)

    def close(self) -> None:
        self._pool.close()
        self._pool.join()


class RayWorkers:
    """``n_workers`` Ray actors (one CPU each), each holding the :class:`RolloutEvaluator` of ``spec``.

    Ray is started with ``ray.init(address=address)`` unless it already runs in this process: ``address``
    None connects to the cluster named by ``RAY_ADDRESS`` or started by ``ray start`` on this machine, else
    starts a local instance (Ray's rule); call ``ray.init`` yourself for other options. The actors must be
    able to import ``sb3_mb`` and make the env (on a cluster: installed on every node, or a ``runtime_env``).
    Candidates go to whichever actor is idle (``ray.util.ActorPool``); results come back in order.

    :raises ImportError: without Ray (``pip install 'sb3-mb[ray]'``).
    """

    def __init__(self, n_workers: int, spec: WorkerSpec, address: str | None = None):
        ray = self._ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=address)
        payload = ray.put(cloudpickle.dumps(spec))
        actor_class = ray.remote(num_cpus=1)(_Worker)
        self._actors = [actor_class.remote(payload) for _ in range(n_workers)]

    def map(self, tasks: list[tuple[np.ndarray, list[int]]]) -> list[tuple[float, int]]:
        """``(mean return, env steps)`` of each ``(candidate, seeds)`` task, in the order of ``tasks``."""
        from ray.util import ActorPool

        return list(ActorPool(self._actors).map(lambda actor, task: actor.evaluate.remote(task), tasks))

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []


def make_pool(
    n_workers: int, spec: WorkerSpec, backend: str = "processes", ray_address: str | None = None
) -> ProcessWorkers | RayWorkers:
    """``n_workers`` workers holding the :class:`RolloutEvaluator` of ``spec``: local processes
    (``backend="processes"``) or Ray actors (``"ray"``, on the cluster at ``ray_address``, see
    :class:`RayWorkers`). Call ``close()`` when done.

    :raises ValueError: for ``n_workers < 1`` or an unknown ``backend``.
    :raises ImportError: for ``"ray"`` without Ray installed.
    """
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    if backend == "processes":
        return ProcessWorkers(n_workers, spec)
    if backend == "ray":
        return RayWorkers(n_workers, spec, ray_address)
    raise ValueError(f"parallel_backend must be one of {PARALLEL_BACKENDS}, got {backend!r}")


def evaluate_population(
    candidates: np.ndarray,
    seeds: Sequence[Sequence[int]],
    evaluator: RolloutEvaluator | BatchedRolloutEvaluator | None = None,
    pool: ProcessWorkers | RayWorkers | None = None,
) -> tuple[np.ndarray, int]:
    """Scores of ``candidates (population, n_parameters)``, candidate ``i`` over the episodes ``seeds[i]``:
    in-process with ``evaluator`` (one episode after the other, or in lockstep with a
    :class:`BatchedRolloutEvaluator`) or by the workers of ``pool`` (:func:`make_pool`), with the same result.

    :return: ``(returns (population,), env steps taken)``.
    :raises ValueError: unless exactly one of ``evaluator`` and ``pool`` is given.
    """
    if (evaluator is None) == (pool is None):
        raise ValueError("give exactly one of evaluator (in-process) and pool (workers)")
    tasks = [
        (candidate, list(candidate_seeds))
        for candidate, candidate_seeds in zip(candidates, seeds, strict=True)
    ]
    if pool is not None:
        results = pool.map(tasks)
        return np.array([value for value, _ in results]), int(sum(steps for _, steps in results))
    before = evaluator.env_steps
    if isinstance(evaluator, BatchedRolloutEvaluator):
        return evaluator.evaluate_population(candidates, seeds), evaluator.env_steps - before
    returns = np.array([evaluator.evaluate(*task) for task in tasks])
    return returns, evaluator.env_steps - before
