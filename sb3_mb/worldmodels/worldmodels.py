"""World Models: V (VAE), M (MDN-RNN) and a small controller C trained by CMA-ES, in the real env or in the
dream.

Ha & Schmidhuber 2018, "World Models", arXiv:1803.10122, Sec. 3.3 (CarRacing procedure) and 4 (the dream).
The algorithm box as :class:`WorldModels` runs it (the paper's numbers in brackets)::

    collect n_random_rollouts episodes with uniformly random actions               [10 000]
    round (then again every train_interval collected episodes, if > 0):
        train V for vae_epochs passes over the stored frames
            loss = sum of squared errors + max(KL, kl_tolerance * z_dim)            (App. A.1)
        encode the frames with V (posterior mean and log-variance)
        train M for mdn_epochs passes, on sequences of z ~ q(z | o)
            loss = mixture NLL of z_{t+1} (+ reward error + done cross-entropy)     (App. A.2)
        n_generations of CMA-ES on C, each candidate scored by the mean return of    [pop. 64 x 16]
            rollouts_per_candidate episodes in the real env or in the dream          (Sec. 3.3, 4)
    collect the remaining steps with C (posterior samples of z)

``learn(total_timesteps)`` counts the collected env steps only; the rollouts that score candidates are logged
as ``controller/env_steps``.

Base class: :class:`~sb3_mb.common.base_class.WorldModelAlgorithm`, SB3's off-policy loop for a stateful
agent. It fits: the random rollouts are its warm-up, the rollout storage is its replay buffer
(:class:`~sb3_mb.common.buffers.EpisodeReplayBuffer`, whole episodes in RAM, or on disk with
:class:`~sb3_mb.worldmodels.storage.DiskEpisodeReplayBuffer`, frames and latents in files), the stages are
one ``train()`` call that ``_gradient_steps_due`` schedules, and ``predict`` with a
:class:`~sb3_mb.worldmodels.policies.WorldModelsState` makes ``evaluate_policy``, ``EvalCallback``,
checkpoints and ``save_replay_buffer`` work as for PlaNet.

Where C is scored (``controller_env``):

- ``"real"``: with ``controller_env_fn`` (a picklable function returning a new Gymnasium env whose
  observations are what the policy reads: VecEnv wrappers such as ``VecNormalize`` or ``VecFrameStack`` are
  not applied to it; image transposition is) every worker makes its own env; without it, the candidates run
  in-process on the training ``DummyVecEnv``'s first env (``learn`` refuses other VecEnv wrappers than
  ``VecTransposeImage`` up front), and the training envs are reset afterwards (their episodes in progress
  are stored as truncated).
- ``"dream"``: :class:`~sb3_mb.worldmodels.dream.DreamEnv` at ``temperature``, starting from the stored first
  frames' latents; the real env only collects data and evaluates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback, ConvertCallback
from stable_baselines3.common.logger import Image, Video
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper, VecTransposeImage
from tqdm.rich import tqdm

from sb3_mb.common.base_class import WorldModelAlgorithm
from sb3_mb.common.buffers import EpisodeReplayBuffer
from sb3_mb.common.utils import make_progress_bar, resolve_policy_and_env
from sb3_mb.worldmodels.cmaes import (
    PARALLEL_BACKENDS,
    BatchedRolloutEvaluator,
    ControllerES,
    RolloutEvaluator,
    WorkerSpec,
    evaluate_population,
    import_ray,
    make_pool,
)
from sb3_mb.worldmodels.dream import DreamEnv
from sb3_mb.worldmodels.mdn_rnn import MDNRNN
from sb3_mb.worldmodels.policies import (
    CnnPolicy,
    MlpPolicy,
    WorldModelsPolicy,
    check_action_space,
    check_spaces,
)
from sb3_mb.worldmodels.storage import DiskEpisodeReplayBuffer, latent_storage
from sb3_mb.worldmodels.vae import preprocess_images

SelfWorldModels = TypeVar("SelfWorldModels", bound="WorldModels")

CONTROLLER_ENVS = ("real", "dream")


class RandomRolloutsBar(BaseCallback):
    """A bar of the random rollouts (episodes stored, of ``n_random_rollouts``), added to the callbacks by
    ``WorldModels.learn(..., progress_bar=True)`` while they are being collected."""

    def __init__(self):
        super().__init__()
        self.bar: tqdm | None = None

    def _done(self) -> int:
        return min(self.model.replay_buffer.n_episodes_added, self.model.n_random_rollouts)

    def _on_training_start(self) -> None:
        if self._done() < self.model.n_random_rollouts:
            self.bar = make_progress_bar(self.model.n_random_rollouts, "World Models random rollouts", True)
            self.bar.update(self._done())

    def _advance(self) -> None:
        if self.bar is not None:
            self.bar.update(self._done() - self.bar.n)
            if self._done() >= self.model.n_random_rollouts:
                self._on_training_end()

    def _on_step(self) -> bool:
        self._advance()
        return True

    def _on_rollout_end(self) -> None:
        self._advance()

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _DreamMaker:
    """Picklable ``policy -> DreamEnv`` for the worker processes."""

    def __init__(self, mu: np.ndarray, log_var: np.ndarray, action_space: spaces.Space, **kwargs: Any):
        self.mu, self.log_var, self.action_space, self.kwargs = mu, log_var, action_space, kwargs

    def __call__(self, policy: WorldModelsPolicy) -> DreamEnv:
        return DreamEnv(policy.mdn_rnn, self.mu, self.log_var, self.action_space, **self.kwargs)


class _EnvMaker:
    """Picklable ``policy -> env`` from the user's ``controller_env_fn``."""

    def __init__(self, env_fn: Callable[[], gym.Env]):
        self.env_fn = env_fn

    def __call__(self, policy: WorldModelsPolicy) -> gym.Env:
        return self.env_fn()


class WorldModels(WorldModelAlgorithm):
    """World Models (Ha & Schmidhuber 2018, arXiv:1803.10122) on SB3's off-policy machinery (see the module).

    The arguments here are the learning rule and the stage sizes; the network sizes are ``policy_kwargs`` of
    :class:`~sb3_mb.worldmodels.policies.WorldModelsPolicy`. ``WorldModels(env)`` picks ``CnnPolicy`` for
    uint8 image observations and ``MlpPolicy`` (an MLP VAE) otherwise.

    :param policy: ``"CnnPolicy"`` (images, resized to 64x64), ``"MlpPolicy"`` (vectors) or a policy class; or
        the env itself, with ``env`` left out.
    :param env: a Gymnasium env, a ``VecEnv`` or a registered env id; bounded ``Box`` or ``Discrete`` actions.
    :param learning_rate: M's Adam learning rate (the original: 1e-3), or a schedule.
    :param vae_learning_rate: V's Adam learning rate (the original: 1e-4).
    :param buffer_size: rollout storage in frames (an episode of ``L`` steps takes ``L + 1``).
    :param batch_size: M's sequences per update (the original: 100).
    :param sequence_length: M's steps per sequence (the original: 1000, CarRacing's whole episode); when every
        stored episode is shorter, whole episodes.
    :param vae_batch_size: V's frames per update (the original: 100).
    :param n_random_rollouts: episodes of uniformly random actions before the first round (paper: 10 000).
    :param vae_epochs: passes over the stored frames per round (1).
    :param mdn_epochs: passes over the stored transitions per round (20).
    :param reward_loss_scale: weight of M's reward error. :param done_loss_scale: weight of M's done loss.
    :param done_positive_weight: weight of the terminal steps in M's done loss (``pos_weight`` of the
        logistic loss; 1: unweighted). Terminations are rare in the data; the original Doom RNN weights them
        up (its ``restart_factor``).
    :param controller_env: ``"real"`` or ``"dream"`` (module docstring).
    :param population_size: CMA-ES candidates per generation (paper: 64).
    :param rollouts_per_candidate: episodes scoring each candidate (paper: 16).
    :param n_generations: CMA-ES generations per round.
    :param sigma0: CMA-ES's initial step size (the original: 0.1).
    :param temperature: tau of the dream (Doom: 1.15).
    :param max_episode_steps: cut each scoring episode after this many steps (None: the env's own limit; the
        dream's length is ``dream_max_episode_steps``).
    :param dream_max_episode_steps: length of a dream episode (1000).
    :param n_workers: workers scoring candidates; 1 scores in-process with ``parallel_backend="processes"``.
        Results depend neither on it nor on the backend (the workers run on the CPU with one thread:
        bit-identical to in-process scoring on a CPU model; each candidate's episodes are seeded from the
        CMA-ES seed, the generation and the candidate's index alone).
    :param controller_batch_envs: in-process scoring in the real env with ``controller_env_fn``: episodes
        played in lockstep, each in its own env from ``controller_env_fn``, with one batched V / C / M call
        per step (:class:`~sb3_mb.worldmodels.cmaes.BatchedRolloutEvaluator`; each candidate's return as
        one after the other up to float32 rounding). 1: one episode after the other, the reference.
        On CarRacing-v3 with the paper's V and M, one CPU thread, 8 envs scored at 0.84 of the raw env's
        rate, one by one at 0.67 (``benchmarks/README.md``, World Models, speed).
    :param parallel_backend: ``"processes"``: local processes, started with ``forkserver`` (or ``spawn``), so
        a script using them needs the ``if __name__ == "__main__":`` guard; ``"ray"``: ``n_workers`` actors of
        a Ray cluster, one CPU each, even for ``n_workers=1`` (``pip install 'sb3-mb[ray]'``; every node must
        import ``sb3_mb`` and make the env).
    :param ray_address: the cluster to connect to when Ray is not yet initialised in this process (None:
        Ray's rule, ``RAY_ADDRESS``, a cluster started by ``ray start`` here, else a new local instance);
        call ``ray.init`` yourself first for any other option.
    :param controller_env_fn: a picklable function returning a new real env for scoring (needed with
        ``controller_env="real"`` and workers). Not saved: ``WorldModels.load(path, controller_env_fn=...)``
        gives it back.
    :param train_interval: collected episodes between later rounds (0: one round, the paper).
    :param max_grad_norm: global-norm gradient clip of V and M (1000, effectively none).
    :param nll_horizon: after each M stage, log M's open-loop NLL at each step ``k = 1..nll_horizon`` of the
        horizon (``train/mdn_nll_step_<k>``, :meth:`horizon_nll`; 0: off).
    :param log_images: with image observations, log 8 stored frames beside V's reconstructions after each
        V stage (``train/vae_reconstructions``) and a dream video of up to 100 steps after each M stage
        (``train/dream``, :meth:`dream_video`); TensorBoard output.
    :param replay_buffer_class: the rollout storage, an :class:`~sb3_mb.common.buffers.EpisodeReplayBuffer`.
    :param replay_buffer_kwargs: its extra arguments. :param policy_kwargs: the network sizes.
    :param stats_window_size: episodes in the rollout statistics. :param tensorboard_log: log folder.
    :param verbose: 0, 1 or 2. :param seed: random seed. :param device: torch device.
    :raises ValueError: for an unsupported observation or action space (naming it and what is expected), an
        unknown ``controller_env`` or ``parallel_backend``, ``n_workers < 1``, or workers in the real env
        without ``controller_env_fn``.
    :raises ImportError: for ``parallel_backend="ray"`` without Ray (``pip install 'sb3-mb[ray]'``).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy, "CnnPolicy": CnnPolicy}
    policy: WorldModelsPolicy
    replay_buffer: EpisodeReplayBuffer

    def __init__(
        self,
        policy: str | type[WorldModelsPolicy] | GymEnv,
        env: GymEnv | str | None = None,
        learning_rate: float | Schedule = 1e-3,
        vae_learning_rate: float = 1e-4,
        buffer_size: int = 100_000,
        batch_size: int = 100,
        sequence_length: int = 1000,
        vae_batch_size: int = 100,
        n_random_rollouts: int = 10_000,
        vae_epochs: int = 1,
        mdn_epochs: int = 20,
        reward_loss_scale: float = 1.0,
        done_loss_scale: float = 1.0,
        done_positive_weight: float = 1.0,
        controller_env: str = "real",
        population_size: int = 64,
        rollouts_per_candidate: int = 16,
        n_generations: int = 100,
        sigma0: float = 0.1,
        temperature: float = 1.0,
        max_episode_steps: int | None = None,
        dream_max_episode_steps: int = 1000,
        n_workers: int = 1,
        controller_batch_envs: int = 8,
        parallel_backend: str = "processes",
        ray_address: str | None = None,
        controller_env_fn: Callable[[], gym.Env] | None = None,
        train_interval: int = 0,
        max_grad_norm: float = 1000.0,
        nll_horizon: int = 10,
        log_images: bool = True,
        replay_buffer_class: type[EpisodeReplayBuffer] = EpisodeReplayBuffer,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        policy, env = resolve_policy_and_env(policy, env, self.policy_aliases, "WorldModels", verbose)
        if env is not None:
            check_action_space(env.action_space)  # before SB3's own assertions, with a clearer message
        if controller_env not in CONTROLLER_ENVS:
            raise ValueError(f"controller_env must be one of {CONTROLLER_ENVS}, got {controller_env!r}")
        if parallel_backend not in PARALLEL_BACKENDS:
            raise ValueError(f"parallel_backend must be one of {PARALLEL_BACKENDS}, got {parallel_backend!r}")
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        if controller_batch_envs < 1:
            raise ValueError(f"controller_batch_envs must be >= 1, got {controller_batch_envs}")
        if parallel_backend == "ray":
            import_ray()  # before collecting anything
        uses_workers = n_workers > 1 or parallel_backend == "ray"
        if controller_env == "real" and uses_workers and controller_env_fn is None:
            raise ValueError(
                f"n_workers={n_workers} with parallel_backend={parallel_backend!r} in the real env needs "
                "controller_env_fn, a picklable function returning a new env"
            )
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size=buffer_size,
            batch_size=batch_size,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            supported_action_spaces=(spaces.Box, spaces.Discrete),
        )
        self.vae_learning_rate, self.sequence_length, self.vae_batch_size = (
            vae_learning_rate,
            sequence_length,
            vae_batch_size,
        )
        self.n_random_rollouts, self.vae_epochs, self.mdn_epochs = n_random_rollouts, vae_epochs, mdn_epochs
        self.reward_loss_scale, self.done_loss_scale = reward_loss_scale, done_loss_scale
        self.done_positive_weight = done_positive_weight
        self.controller_env, self.population_size = controller_env, population_size
        self.rollouts_per_candidate, self.n_generations, self.sigma0 = (
            rollouts_per_candidate,
            n_generations,
            sigma0,
        )
        self.temperature, self.max_episode_steps = temperature, max_episode_steps
        self.dream_max_episode_steps, self.n_workers = dream_max_episode_steps, n_workers
        self.controller_batch_envs = controller_batch_envs
        self.parallel_backend, self.ray_address = parallel_backend, ray_address
        self.controller_env_fn, self.train_interval, self.max_grad_norm = (
            controller_env_fn,
            train_interval,
            max_grad_norm,
        )
        self.log_images, self.nll_horizon = log_images, nll_horizon
        #: CMA-ES's state (saved with the model, so controller training resumes); made at the first round.
        self.es: ControllerES | None = None
        self._last_round_episodes: int | None = None  # buffer episodes at the last round (not saved)
        self._latents: dict[str, Any] | None = None  # V's posterior of the stored frames (not saved)
        self._progress_bar = False  # learn(progress_bar=True): bars of the stages too (not saved)
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        use_conv = issubclass(self.policy_class, CnnPolicy) or bool(self.policy_kwargs.get("use_conv"))
        check_spaces(self.observation_space, self.action_space, use_conv)
        if self.buffer_size < 2 and issubclass(self.replay_buffer_class, DiskEpisodeReplayBuffer):
            # load(buffer_size=1) (the zoo's enjoy) asks for no replay: a 2-record store in a new temporary
            # folder, not the run's store (which another layout would refuse, and mode="w" would empty).
            self.replay_buffer_kwargs = {**self.replay_buffer_kwargs, "path": None, "mode": "a"}
        super()._setup_model()

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "_last_round_episodes",
            "_latents",
            "controller_env_fn",
            "_progress_bar",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer", "policy.vae_optimizer"], []

    def learn(
        self: SelfWorldModels,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "WorldModels",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfWorldModels:
        """:meth:`~sb3_mb.common.base_class.WorldModelAlgorithm.learn`, logged under ``WorldModels``.

        ``progress_bar=True`` draws, besides SB3's bar of the env steps, bars of the work between them: the
        random rollouts (episodes of ``n_random_rollouts``), V's and M's updates and the CMA-ES generations.

        :raises ValueError: before collecting anything, if C is to be scored in-process on a training env it
            cannot use (``SubprocVecEnv``, ``VecNormalize``, ``VecFrameStack``: pass ``controller_env_fn``).
        """
        if self.controller_env == "real" and self.controller_env_fn is None and self.env is not None:
            self._training_env_for_scoring()
        self._progress_bar = progress_bar
        if progress_bar:
            extra = RandomRolloutsBar()
            if callback is None:
                callback = [extra]
            elif isinstance(callback, list):
                callback = [*callback, extra]
            else:
                callback = [
                    callback if isinstance(callback, BaseCallback) else ConvertCallback(callback),
                    extra,
                ]
        return super().learn(
            total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar
        )

    # ----------------------------------------------------------------------------------------------
    # Schedule
    # ----------------------------------------------------------------------------------------------
    def _in_warmup(self) -> bool:
        """Uniformly random actions until ``n_random_rollouts`` episodes are stored."""
        return self.replay_buffer.n_episodes_added < self.n_random_rollouts

    def _gradient_steps_due(self) -> int:
        """1 (a round: V, M, C) once the random rollouts are in, then every ``train_interval`` episodes."""
        added = self.replay_buffer.n_episodes_added
        if added < self.n_random_rollouts:
            return 0
        if self._last_round_episodes is None or (
            self.train_interval > 0 and added - self._last_round_episodes >= self.train_interval
        ):
            self._last_round_episodes = added
            return 1
        return 0

    def train(self, gradient_steps: int, batch_size: int | None = None) -> None:
        """One round of the stages (module docstring): V, encoding, M, then CMA-ES on C.

        :raises FloatingPointError: if a loss or gradient norm of V or M is NaN or infinite (before the
            update).
        """
        for _ in range(gradient_steps):
            self.train_vae()
            self.train_mdn_rnn(batch_size or self.batch_size)
            self.train_controller()
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    # ----------------------------------------------------------------------------------------------
    # V
    # ----------------------------------------------------------------------------------------------
    def _gradient_step(
        self, optimizer: th.optim.Optimizer, parameters: Any, losses: dict[str, th.Tensor], what: str
    ) -> float:
        self._check_finite(losses, f"{what} loss", step=self._n_updates + 1)
        optimizer.zero_grad()
        losses["loss"].backward()
        grad_norm = th.nn.utils.clip_grad_norm_(list(parameters), self.max_grad_norm)
        self._check_finite(grad_norm, f"{what} gradient norm", step=self._n_updates + 1)
        optimizer.step()
        self._n_updates += 1
        return float(grad_norm)

    def train_vae(self) -> dict[str, float]:
        """``vae_epochs`` passes of V over the stored frames (minibatches of ``vae_batch_size`` frames drawn
        uniformly); logs ``train/vae_loss``, ``train/vae_reconstruction``, ``train/vae_kl``.

        :return: the mean loss terms.
        """
        policy, buffer = self.policy, self.replay_buffer
        for group in policy.vae_optimizer.param_groups:
            group["lr"] = self.vae_learning_rate
        policy.set_training_mode(True)
        n_updates = max(1, round(self.vae_epochs * buffer.n_records / self.vae_batch_size))
        totals: dict[str, float] = defaultdict(float)
        bar = make_progress_bar(n_updates, "World Models V updates", self._progress_bar)
        try:
            for _ in range(n_updates):
                index = buffer.sample_window_indices(self.vae_batch_size, 1)[:, 0]
                observations = buffer.to_torch(buffer.observations[index])
                losses = policy.vae.losses(observations)._asdict()
                totals["grad_norm"] += self._gradient_step(
                    policy.vae_optimizer, policy.vae.parameters(), losses, "VAE"
                )
                for key, value in losses.items():
                    totals[key] += float(value.detach())
                bar.update(1)
        finally:
            bar.close()
        policy.set_training_mode(False)
        self._latents = None  # V changed: the frames are encoded again
        if self.log_images and policy.use_conv:
            self.logger.record(
                "train/vae_reconstructions",
                self.reconstruction_image(buffer.observations[buffer.sample_window_indices(8, 1)[:, 0]]),
                exclude=("stdout", "log", "json", "csv"),
            )
        means = {key: value / n_updates for key, value in totals.items()}
        for key, value in means.items():
            self.logger.record(f"train/vae_{key}", value)
        return means

    @th.no_grad()
    def reconstruction_image(self, observations: np.ndarray) -> Image:
        """Frames beside V's reconstructions (from the posterior mean), as the paper's Fig. 4 / 13.

        :param observations: uint8 images ``(n, C, H, W)`` (stored frames).
        :return: an SB3 :class:`~stable_baselines3.common.logger.Image` ``(C, n * 64, 2 * 64)`` in ``[0, 1]``:
            the frames (resized to 64x64) left, the reconstructions right, one frame per row.
        """
        frames = preprocess_images(th.as_tensor(observations, device=self.device))
        reconstructions = self.policy.vae.decode(self.policy.vae.encode(frames * 255.0)[0])
        pairs = th.cat([frames, reconstructions], dim=-1)  # (n, C, 64, 128)
        return Image(th.cat(list(pairs), dim=-2).cpu(), dataformats="CHW")

    @th.no_grad()
    def encode_records(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """V's posterior ``(mu, log_var)`` of the stored frames at record indices ``index`` (any shape), each
        ``(*index.shape, z_dim)``: the paper's encoding stage, done once per frame and cached until V trains
        again or the stored episodes change."""
        buffer = self.replay_buffer
        # New episodes (they may overwrite encoded records) or another buffer loaded: encode afresh.
        contents = (id(buffer), buffer.n_episodes_added)
        if self._latents is None or self._latents["contents"] != contents:
            # In RAM, or on disk for a DiskEpisodeReplayBuffer (M then trains on stored latents).
            self._latents = {"contents": contents, **latent_storage(buffer, self.policy.z_dim)}
        latents = self._latents
        index = np.asarray(index)
        missing = np.unique(index[~latents["encoded"][index]])
        for start in range(0, len(missing), 256):
            rows = missing[start : start + 256]
            mu, log_var = self.policy.vae.encode(buffer.to_torch(buffer.observations[rows]))
            latents["mu"][rows], latents["log_var"][rows] = mu.cpu().numpy(), log_var.cpu().numpy()
            latents["encoded"][rows] = True
        return latents["mu"][index], latents["log_var"][index]

    # ----------------------------------------------------------------------------------------------
    # M
    # ----------------------------------------------------------------------------------------------
    def _window_length(self) -> int:
        """Records per sampled sequence: ``sequence_length + 1`` (T inputs and their targets), or the longest
        stored episode when all are shorter."""
        return int(min(self.sequence_length + 1, self.replay_buffer.episode_lengths.max()))

    def mdn_losses(self, index: np.ndarray, generator: th.Generator | None = None) -> dict[str, th.Tensor]:
        """M's loss on the windows of record indices ``index (batch, T + 1)``.

        Inputs ``[z_t, a_t]`` for ``t < T`` with ``z_t`` sampled from the stored posterior (the original
        samples ``z`` from the saved ``mu, log_var`` in every epoch), targets ``z_{t+1}`` likewise; the
        reward and done heads predict ``r_t`` and whether the episode terminated at ``t + 1``.

        :return: ``loss`` and its terms ``nll`` (nats per latent dimension), ``reward_loss``, ``done_loss``.
        """
        buffer, policy = self.replay_buffer, self.policy
        mu, log_var = (th.as_tensor(x, device=self.device) for x in self.encode_records(index))
        z = policy.vae.sample(mu, log_var, generator)
        actions = self._model_actions(index[:, 1:])
        params, _ = policy.mdn_rnn(z[:, :-1], actions)
        nll = MDNRNN.nll(params, z[:, 1:]).mean()
        loss = nll
        losses = {"nll": nll}
        if policy.predict_reward:
            rewards = buffer.to_torch(buffer.rewards[index[:, 1:]])
            losses["reward_loss"] = ((params.reward - rewards) ** 2).mean()
            loss = loss + self.reward_loss_scale * losses["reward_loss"]
        if policy.predict_done:
            dones = buffer.to_torch(buffer.terminated[index[:, 1:]].astype(np.float32))
            losses["done_loss"] = th.nn.functional.binary_cross_entropy_with_logits(
                params.done_logit, dones, pos_weight=th.tensor(self.done_positive_weight, device=self.device)
            )
            loss = loss + self.done_loss_scale * losses["done_loss"]
        losses["loss"] = loss
        return losses

    def _model_actions(self, index: np.ndarray) -> th.Tensor:
        """The stored actions at record indices ``index`` (any shape) as M reads them, ``(*index.shape,
        action_dim)``: ``Box`` actions as stored (scaled to ``[-1, 1]``), ``Discrete`` ones one-hot (they are
        stored as the env's values)."""
        actions = self.replay_buffer.to_torch(self.replay_buffer.actions[index])
        if self.policy.discrete:
            choice = actions[..., 0].long() - int(self.action_space.start)
            actions = th.nn.functional.one_hot(choice, self.policy.action_dim).float()
        return actions

    @th.no_grad()
    def horizon_nll(self, index: np.ndarray, generator: th.Generator | None = None) -> np.ndarray:
        """M's NLL per step of the horizon, open-loop, as in the dream (Sec. 4): from ``z_0`` of each window,
        M steps under the recorded actions, feeding back its own samples at ``temperature``; step ``k`` scores
        the stored ``z_k`` under the mixture M predicts after ``k`` steps. Step 1 is the one-step NLL that M
        trains on (``train/mdn_nll`` at the window's first position); the growth with ``k`` is what the dream
        loses to compounding error. ``z`` are samples of V's stored posterior, as in training.

        :param index: record indices ``(batch, H + 1)`` of windows of stored episodes
            (:meth:`~sb3_mb.common.buffers.EpisodeReplayBuffer.sample_window_indices`).
        :param generator: the torch RNG of the posterior and mixture samples (None: torch's global RNG).
        :return: ``(H,)`` NLL in nats per latent dimension averaged over the windows, step ``k`` at ``k - 1``.
        """
        policy = self.policy
        mu, log_var = (th.as_tensor(x, device=self.device) for x in self.encode_records(index))
        z_real = policy.vae.sample(mu, log_var, generator)
        actions = self._model_actions(index[:, 1:])
        h = th.zeros(len(index), policy.hidden_size, device=self.device)
        hidden, z, nll = (h, th.zeros_like(h)), z_real[:, 0], []
        for k in range(index.shape[1] - 1):
            hidden = policy.mdn_rnn.step(z, actions[:, k], hidden)
            params = policy.mdn_rnn.mixture(hidden[0])
            nll.append(MDNRNN.nll(params, z_real[:, k + 1]).mean())
            z = MDNRNN.sample(params, self.temperature, generator)
        return th.stack(nll).cpu().numpy()

    def _log_horizon_nll(self, batch_size: int) -> None:
        """``train/mdn_nll_step_<k>`` of :meth:`horizon_nll` on ``batch_size`` stored windows of
        ``nll_horizon + 1`` records (fewer when every episode is shorter). Its own RNGs, seeded from ``seed``
        and the update count, leave NumPy's and torch's global streams as they were."""
        window = int(min(self.nll_horizon + 1, self.replay_buffer.episode_lengths.max()))
        if self.nll_horizon < 1 or window < 2:
            return
        rng = np.random.default_rng(None if self.seed is None else [self.seed, self._n_updates])
        generator = th.Generator(device=self.device).manual_seed(int(rng.integers(2**62)))
        index = self.replay_buffer.sample_window_indices(batch_size, window, rng)
        for k, value in enumerate(self.horizon_nll(index, generator), start=1):
            self.logger.record(f"train/mdn_nll_step_{k}", float(value))

    def train_mdn_rnn(self, batch_size: int) -> dict[str, float]:
        """``mdn_epochs`` passes of M over the stored transitions (sequences of ``sequence_length`` steps,
        ``batch_size`` per update); logs ``train/mdn_nll`` and the other terms, then M's NLL per step of the
        horizon (``train/mdn_nll_step_<k>``, ``nll_horizon``).

        :return: the mean loss terms.
        """
        policy, buffer = self.policy, self.replay_buffer
        self._update_learning_rate(policy.optimizer)
        window = self._window_length()
        if window < 2:
            return {}
        policy.set_training_mode(True)
        n_updates = max(1, round(self.mdn_epochs * buffer.n_transitions / (batch_size * (window - 1))))
        totals: dict[str, float] = defaultdict(float)
        bar = make_progress_bar(n_updates, "World Models M updates", self._progress_bar)
        try:
            for _ in range(n_updates):
                losses = self.mdn_losses(buffer.sample_window_indices(batch_size, window))
                totals["grad_norm"] += self._gradient_step(
                    policy.optimizer, policy.mdn_rnn.parameters(), losses, "MDN-RNN"
                )
                for key, value in losses.items():
                    totals[key] += float(value.detach())
                bar.update(1)
        finally:
            bar.close()
        policy.set_training_mode(False)
        means = {key: value / n_updates for key, value in totals.items()}
        for key, value in means.items():
            self.logger.record(f"train/mdn_{key}", value)
        self._log_horizon_nll(batch_size)
        if self.log_images and policy.use_conv:
            self.logger.record(
                "train/dream",
                self.dream_video(buffer.sample_window_indices(1, min(window, 100))[0]),
                exclude=("stdout", "log", "json", "csv"),
            )
        return means

    @th.no_grad()
    def dream_video(self, index: np.ndarray, fps: float = 10.0) -> Video:
        """Real frames beside M's dream of them (Sec. 4, Fig. 12 / the paper's dream videos): from V's latent
        of the first frame, M rolls out open-loop under the recorded actions at ``temperature``, and V decodes
        each ``z``.

        :param index: record indices ``(T,)`` of consecutive frames of one stored episode.
        :return: an SB3 :class:`~stable_baselines3.common.logger.Video` ``(1, T, C, 64, 128)`` in ``[0, 1]``:
            real frames (resized to 64x64) left, dream right.
        """
        policy, buffer = self.policy, self.replay_buffer
        index = np.asarray(index).reshape(-1)
        frames = preprocess_images(buffer.to_torch(buffer.observations[index]))
        actions = self._model_actions(index[1:])
        z = policy.vae.encode(frames[:1] * 255.0)[0]
        h = th.zeros(1, policy.hidden_size, device=self.device)
        c = th.zeros_like(h)
        latents = [z]
        for t in range(len(index) - 1):
            h, c = policy.mdn_rnn.step(z, actions[t : t + 1], (h, c))
            z = MDNRNN.sample(policy.mdn_rnn.mixture(h), self.temperature)
            latents.append(z)
        dream = policy.vae.decode(th.cat(latents))
        return Video(th.cat([frames, dream], dim=-1)[None].cpu(), fps=fps)

    # ----------------------------------------------------------------------------------------------
    # C
    # ----------------------------------------------------------------------------------------------
    def dream_env(self) -> DreamEnv:
        """The dream on the current M (:class:`~sb3_mb.worldmodels.dream.DreamEnv`), started from the stored
        first frames' latents."""
        return self._dream_maker()(self.policy)

    def _dream_maker(self) -> _DreamMaker:
        mu, log_var = self.encode_records(np.flatnonzero(self.replay_buffer.is_first))
        return _DreamMaker(
            mu,
            log_var,
            self.action_space,
            temperature=self.temperature,
            max_episode_steps=self.dream_max_episode_steps,
        )

    def _controller_env_maker(self) -> Callable[[WorldModelsPolicy], gym.Env] | None:
        """How the scoring env is made: the dream, the user's ``controller_env_fn``, or None."""
        if self.controller_env == "dream":
            return self._dream_maker()
        if self.controller_env_fn is not None:
            return _EnvMaker(self.controller_env_fn)
        return None

    def _scores_in_lockstep(self, maker: Callable[[WorldModelsPolicy], gym.Env] | None) -> bool:
        """Whether in-process scoring plays ``controller_batch_envs`` episodes in lockstep: in the real env
        made by ``controller_env_fn`` (the dream and the training env score one episode after the other)."""
        return self.controller_batch_envs > 1 and maker is not None and self.controller_env == "real"

    def _training_env_for_scoring(self) -> gym.Env:
        """The first env of the training ``DummyVecEnv`` (in-process real-env scoring without
        ``controller_env_fn``).

        :raises ValueError: for another ``VecEnv`` or VecEnv wrappers other than ``VecTransposeImage``.
        """
        venv = self.env
        while isinstance(venv, VecEnvWrapper):
            if not isinstance(venv, VecTransposeImage):
                raise ValueError(
                    f"scoring C in the training env does not go through {type(venv).__name__}; pass "
                    "controller_env_fn (a function returning the env as the policy sees it)"
                )
            venv = venv.venv
        if not isinstance(venv, DummyVecEnv):
            raise ValueError(
                f"scoring C in the training env needs a DummyVecEnv, got {type(venv).__name__}; pass "
                "controller_env_fn"
            )
        return venv.envs[0]

    def train_controller(self) -> dict[str, float]:
        """``n_generations`` of CMA-ES on C (:class:`~sb3_mb.worldmodels.cmaes.ControllerES`); C takes the
        distribution's mean after each. Logs ``controller/best``, ``controller/mean``, ``controller/sigma``,
        ``controller/best_ever``, ``controller/generation``, ``controller/env_steps``.

        :return: the last generation's statistics.
        :raises FloatingPointError: if a candidate's return is NaN or infinite (before CMA-ES is told).
        """
        policy = self.policy
        if self.es is None:
            seed = int(np.random.randint(0, 2**31 - 1))  # noqa: NPY002  (NumPy's global RNG, seeded by SB3)
            self.es = ControllerES(policy.controller.get_vector(), self.population_size, self.sigma0, seed)
        maker = self._controller_env_maker()
        pool, evaluator = None, None
        if self.n_generations > 0 and (self.n_workers > 1 or self.parallel_backend == "ray"):
            if maker is None:
                raise ValueError(
                    "scoring in workers in the real env needs controller_env_fn (it is not saved with the "
                    "model: WorldModels.load(path, controller_env_fn=...))"
                )
            spec = WorkerSpec(
                type(policy),
                policy._get_constructor_parameters(),
                {key: value.cpu() for key, value in policy.state_dict().items()},
                maker,
                self.max_episode_steps,
            )
            pool = make_pool(self.n_workers, spec, self.parallel_backend, self.ray_address)
        elif self.n_generations > 0 and self._scores_in_lockstep(maker):
            n_envs = min(self.controller_batch_envs, self.population_size * self.rollouts_per_candidate)
            envs = [maker(policy) for _ in range(n_envs)]
            evaluator = BatchedRolloutEvaluator(policy, envs, self.max_episode_steps)
        else:
            env = maker(policy) if maker is not None else self._training_env_for_scoring()
            evaluator = RolloutEvaluator(policy, env, self.max_episode_steps)
        stats: dict[str, float] = {}
        env_steps = 0
        bar = make_progress_bar(self.n_generations, "World Models CMA-ES generations", self._progress_bar)
        try:
            for _ in range(self.n_generations):
                candidates = self.es.ask()
                seeds = [
                    self.es.rollout_seeds(i, self.rollouts_per_candidate) for i in range(len(candidates))
                ]
                returns, steps = evaluate_population(candidates, seeds, evaluator, pool)
                self._check_finite(
                    returns, "candidates' return", self.es.generation + 1, unit="CMA-ES generation"
                )
                env_steps += steps
                stats = self.es.tell(candidates, returns)
                policy.controller.set_vector(self.es.mean)
                if self.verbose >= 1:
                    print(
                        f"CMA-ES generation {self.es.generation}: best {stats['best']:.2f}, "
                        f"mean {stats['mean']:.2f}, sigma {stats['sigma']:.4f}"
                    )
                bar.update(1)
        finally:
            bar.close()
            if pool is not None:
                pool.close()
            if isinstance(evaluator, BatchedRolloutEvaluator):
                evaluator.close()
        policy.controller.set_vector(self.es.mean)
        if evaluator is not None and maker is None:
            self._restart_training_envs()
        for key, value in stats.items():
            self.logger.record(f"controller/{key}", value)
        self.logger.record("controller/generation", self.es.generation)
        self.logger.record("controller/env_steps", env_steps)
        return stats

    def _restart_training_envs(self) -> None:
        """After scoring in the training env: store the episodes in progress as truncated, reset the envs."""
        self.replay_buffer.truncate_staged_episodes()
        self._last_obs = self.env.reset()
        self._last_episode_starts = np.ones((self.env.num_envs,), dtype=bool)
        self._last_state = None
        if self._vec_normalize_env is not None:
            self._last_original_obs = self._vec_normalize_env.get_original_obs()
