"""MBPO: Model-Based Policy Optimization (Janner, Fu, Zhang, Levine, NeurIPS 2019), with VaGraM model losses
(Voelcker, Liao, Garg, Farahmand, ICLR 2022). Spec: ``shared/spec/mbpo_vagram.md``.

MBPO is SAC trained on short rollouts of a learned ensemble dynamics model (paper Alg. 2)::

    for each environment step:
        every model_train_freq steps:
            train the ensemble on the real buffer (holdout, early stopping, elites)   # train_dynamics
            from n_rollouts_per_step * model_train_freq real start states, roll the
            model out for rollout_length(epoch) steps with the current policy,
            store the transitions in the model buffer                                 # rollout_model
        take one step in the real environment with the policy, store it               # SB3 collect_rollouts
        n_sac_updates_per_step SAC updates on batches drawn from the model buffer
        with probability model_data_ratio(epoch), else from the real buffer            # train
"""

from __future__ import annotations

import io
import pathlib
import time
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, ReplayBufferSamples, Schedule
from stable_baselines3.common.utils import FloatSchedule, update_learning_rate
from stable_baselines3.common.vec_env import VecNormalize
from stable_baselines3.sac import SAC

from sb3_mb.common.ensemble import EnsembleMLP, EnsembleTrainer, EnsembleTrainResult
from sb3_mb.common.model_env import ModelEnv
from sb3_mb.common.spaces import check_flat_box_spaces
from sb3_mb.common.termination import TerminationFn, get_termination_fn
from sb3_mb.mbpo.model_losses import MODEL_LOSSES, ValueAwareLoss, make_model_loss
from sb3_mb.mbpo.policies import MlpPolicy, SACPolicy

__all__ = ["MBPO", "MixedReplaySampler", "ModelReplayBuffer", "truncated_linear"]

SelfMBPO = TypeVar("SelfMBPO", bound="MBPO")


def truncated_linear(schedule: tuple[float, float, float, float], x: float) -> float:
    """mbrl-lib's ``truncated_linear``: ``schedule = (min_x, max_x, min_y, max_y)``.

    ``min_y`` for ``x <= min_x``, then linear up to ``max_y`` at ``max_x``, constant after.
    MBPO evaluates it at ``x = epoch + 1``.
    """
    min_x, max_x, min_y, max_y = schedule
    if x <= min_x:
        return float(min_y)
    frac = 1.0 if max_x <= min_x else min((x - min_x) / (max_x - min_x), 1.0)
    return float(min_y + frac * (max_y - min_y))


class ModelReplayBuffer(ReplayBuffer):
    """Replay buffer of model-generated transitions: one env column, no timeouts, filled in batches.

    :param buffer_size: capacity in transitions
        (MBPO: ``rollout_length * rollouts per epoch * retain_epochs``).
    """

    def __init__(
        self, buffer_size: int, observation_space: spaces.Space, action_space: spaces.Space, device="auto"
    ):
        super().__init__(
            max(int(buffer_size), 1),
            observation_space,
            action_space,
            device,
            n_envs=1,
            handle_timeout_termination=False,
        )

    def extend(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        next_obs: np.ndarray,
        rewards: np.ndarray,
        dones: np.ndarray,
    ) -> None:
        """Append ``n`` transitions, overwriting the oldest when full.

        Shapes: ``(n, obs_dim)``, ``(n, action_dim)``, ``(n, obs_dim)``, ``(n,)``, ``(n,)``.
        """
        n = len(obs)
        if n == 0:
            return
        if n > self.buffer_size:
            obs, actions, next_obs, rewards, dones = (
                x[-self.buffer_size :] for x in (obs, actions, next_obs, rewards, dones)
            )
            n = self.buffer_size
        idx = (self.pos + np.arange(n)) % self.buffer_size
        self.observations[idx, 0] = obs
        self.next_observations[idx, 0] = next_obs
        self.actions[idx, 0] = actions.reshape(n, self.action_dim)
        self.rewards[idx, 0] = rewards
        self.dones[idx, 0] = dones
        self.full = self.full or self.pos + n >= self.buffer_size
        self.pos = int((self.pos + n) % self.buffer_size)

    def _chronological(self) -> np.ndarray:
        if self.full:
            return np.concatenate([np.arange(self.pos, self.buffer_size), np.arange(self.pos)])
        return np.arange(self.pos)

    def resized(self, buffer_size: int) -> ModelReplayBuffer:
        """A buffer of the new capacity holding the newest transitions of this one."""
        new = ModelReplayBuffer(buffer_size, self.observation_space, self.action_space, self.device)
        order = self._chronological()
        new.extend(
            self.observations[order, 0],
            self.actions[order, 0],
            self.next_observations[order, 0],
            self.rewards[order, 0],
            self.dones[order, 0],
        )
        return new


class MixedReplaySampler:
    """Draws SAC batches from the model buffer and the real buffer.

    :param model_fraction: ``p``, the model-data ratio of the current epoch.
    :param mode: ``"batch"`` (VaGraM / mbrl-lib, spec 2.4): each whole batch comes from the model buffer with
        probability ``p`` (from the real buffer if the model buffer holds fewer than a batch);
        ``"sample"`` (original MBPO ``real_ratio``): every batch holds ``round(p * batch_size)`` model
        samples.
    """

    def __init__(self, real: ReplayBuffer, model: ReplayBuffer, model_fraction: float, mode: str = "batch"):
        self.real, self.model, self.model_fraction, self.mode = real, model, float(model_fraction), mode
        self.n_model_samples = 0
        self.n_samples = 0

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        self.n_samples += batch_size
        if self.model.size() == 0 or self.model_fraction <= 0:
            return self.real.sample(batch_size, env=env)
        if self.mode == "batch":
            if self.model.size() >= batch_size and np.random.random() < self.model_fraction:  # noqa: NPY002
                self.n_model_samples += batch_size
                return self.model.sample(batch_size, env=env)
            return self.real.sample(batch_size, env=env)
        n_model = int(round(self.model_fraction * batch_size))
        if n_model >= batch_size:
            self.n_model_samples += batch_size
            return self.model.sample(batch_size, env=env)
        if n_model == 0:
            return self.real.sample(batch_size, env=env)
        self.n_model_samples += n_model
        real, model = self.real.sample(batch_size - n_model, env=env), self.model.sample(n_model, env=env)
        return ReplayBufferSamples(*(th.cat([a, b]) for a, b in zip(real[:5], model[:5], strict=True)))


class MBPO(SAC):
    """Model-Based Policy Optimization on SB3's SAC, with the model loss a constructor choice.

    Defaults: the spec's Hopper configuration (``mbpo_hopper.yaml``, spec mbpo_vagram 2.3-2.4) except where
    marked *generic*; a Hopper run of the paper also sets ``learning_starts=10_000``,
    ``actor_learning_rate=3e-5``, ``target_update_interval=4``, ``target_entropy=-1``,
    ``model_batch_size=1024`` (VaGraM; the MLE runs use 256) and
    ``policy_kwargs=dict(net_arch=[1024, 1024])``.

    Spec QUIRKs and choices (mbpo_vagram.md 2.1-2.4): the value gradient is taken at the real next state
    ``s'`` (not the target delta), independently for each of the four value functions, clipped at the batch's
    95% norm quantile (the ICLR-era rule, not HEAD's effectively-off clipping), and cached per replay index,
    invalidated whenever the critic (or the data) changed (see :mod:`sb3_mb.mbpo.model_losses`). Deviations:
    the warm-up (``learning_starts``) acts uniformly at random as SB3 does, not with the untrained SAC policy;
    SAC's ``normalize_features`` option does not exist here (off, as for paper fidelity).

    SAC arguments are SB3's (see :class:`stable_baselines3.SAC`); ``gradient_steps`` is
    ``n_sac_updates_per_step``. MBPO's own:

    :param actor_learning_rate: actor Adam learning rate (or schedule); ``None``: ``learning_rate``
        (generic). Paper Hopper: 3e-5 (critic and temperature 3e-4).
    :param n_sac_updates_per_step: SAC gradient updates per environment step (paper: 20).
    :param model_loss: ``"nll"`` (Gaussian likelihood, MBPO default, Gaussian head, rollouts sample it),
        ``"mse"``, ``"vagram"`` (bounded VaGraM), ``"vagram_unbounded"`` or ``"itervaml"`` (all four with a
        deterministic head); see :mod:`sb3_mb.mbpo.model_losses`.
    :param ensemble_size: ensemble members (7). :param n_elites: elites chosen on the holdout (5).
    :param n_layers: hidden layers of each member (4; capacity experiments 2-3).
    :param hidden_size: units per hidden layer (200; capacity experiments 64).
    :param model_activation: ``"silu"`` (paper).
    :param model_learning_rate: ensemble Adam learning rate (1e-3).
    :param model_weight_decay: L2 coefficient, one float or one per linear layer (5e-5).
    :param model_batch_size: ensemble batch per member (256; VaGraM Hopper 1024).
    :param model_holdout_ratio: holdout fraction (0.2). :param model_max_holdout: holdout cap (5000).
    :param model_patience: epochs without a 1% holdout improvement before stopping (10).
    :param model_max_epochs: epoch cap per model training (``None``: early stopping only).
    :param model_train_freq: env steps between model trainings (and rollout batches) (250).
    :param epoch_length: env steps per MBPO epoch, the unit of the schedules (1000). Epochs count from
        ``learning_starts``.
    :param n_rollouts_per_step: model rollouts started per env step (400): every model training starts
        ``n_rollouts_per_step * model_train_freq`` rollouts from real states drawn uniformly from the buffer.
    :param rollout_schedule: ``(start_epoch, end_epoch, min_length, max_length)`` evaluated at ``epoch + 1``
        (``truncated_linear``); Hopper ``(20, 150, 1, 5)``, distracted Hopper ``(20, 150, 1, 1)``.
    :param model_retain_epochs: epochs of model data kept in the model buffer (1); its capacity follows the
        rollout length: ``rollout_length * n_rollouts_per_step * epoch_length * model_retain_epochs``.
    :param model_data_ratio_schedule: ``(start_epoch, end_epoch, start, end)`` probability of a SAC batch
        coming from the model buffer (``model_data_likelihood``); Hopper ``(0, 20, 0, 0.95)``, distracted
        Hopper ``(0, 50, 0, 0.95)``.
    :param model_data_mixing: ``"batch"`` (spec 2.4, default) or ``"sample"`` (original MBPO ``real_ratio``);
        see :class:`MixedReplaySampler`.
    :param termination_fn: ``term_fn(obs, act, next_obs) -> bool tensor`` for model rollouts. ``None``: looked
        up from the env id (:func:`sb3_mb.common.termination.get_termination_fn`); an unknown id warns and
        never terminates.
    :param vagram_clip_quantile: value-gradient clipping quantile of the VaGraM losses (0.95, the ICLR-era
        rule; spec 2.1 QUIRK: HEAD's clipping is effectively off). ``None`` disables.
    :param vagram_use_all_vf: VaGraM / IterVAML average over Q1, Q2 and both targets (True) or Q1, Q2.
    :param mse_warmup_epochs: epochs during which the value-aware losses add plain MSE
        (VaGraM ``add_mse``: 1).
    :raises ValueError: for observation spaces other than a flat ``Box``, action spaces other than ``Box``,
        an unknown ``model_loss`` / mixing mode, or ``optimize_memory_usage=True``.
    """

    policy_aliases: ClassVar[dict[str, type[SACPolicy]]] = {"MlpPolicy": MlpPolicy}
    dynamics_model: EnsembleMLP
    dynamics_trainer: EnsembleTrainer
    model_env: ModelEnv
    model_buffer: ModelReplayBuffer

    def __init__(
        self,
        policy: str | type[SACPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 1_000,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        ent_coef: str | float = "auto_0.1",
        target_update_interval: int = 1,
        target_entropy: str | float = "auto",
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        use_sde_at_warmup: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        # MBPO
        actor_learning_rate: float | Schedule | None = None,
        n_sac_updates_per_step: int = 20,
        model_loss: str = "nll",
        ensemble_size: int = 7,
        n_elites: int = 5,
        n_layers: int = 4,
        hidden_size: int = 200,
        model_activation: str = "silu",
        model_learning_rate: float = 1e-3,
        model_weight_decay: float | list[float] = 5e-5,
        model_batch_size: int = 256,
        model_holdout_ratio: float = 0.2,
        model_max_holdout: int = 5000,
        model_patience: int = 10,
        model_max_epochs: int | None = None,
        model_train_freq: int = 250,
        epoch_length: int = 1000,
        n_rollouts_per_step: int = 400,
        rollout_schedule: tuple[float, float, float, float] = (20, 150, 1, 5),
        model_retain_epochs: int = 1,
        model_data_ratio_schedule: tuple[float, float, float, float] = (0, 20, 0.0, 0.95),
        model_data_mixing: str = "batch",
        termination_fn: TerminationFn | None = None,
        vagram_clip_quantile: float | None = 0.95,
        vagram_use_all_vf: bool = True,
        mse_warmup_epochs: int = 1,
        _init_setup_model: bool = True,
    ):
        if isinstance(env, str):
            env = maybe_make_env(env, verbose)  # made here so the space check below sees it
        check_flat_box_spaces(env, "MBPO")
        if model_loss not in MODEL_LOSSES:
            raise ValueError(f"Unknown model_loss {model_loss!r}; expected one of {MODEL_LOSSES}")
        if model_data_mixing not in ("batch", "sample"):
            raise ValueError(f"model_data_mixing must be 'batch' or 'sample', got {model_data_mixing!r}")
        if optimize_memory_usage:
            raise ValueError(
                "MBPO reads next_observations from the replay buffer: optimize_memory_usage=False"
            )
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=n_sac_updates_per_step,
            action_noise=action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            ent_coef=ent_coef,
            target_update_interval=target_update_interval,
            target_entropy=target_entropy,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            use_sde_at_warmup=use_sde_at_warmup,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        self.actor_learning_rate = actor_learning_rate
        self.n_sac_updates_per_step = n_sac_updates_per_step
        self.model_loss = model_loss
        self.ensemble_size, self.n_elites = ensemble_size, n_elites
        self.n_layers, self.hidden_size, self.model_activation = n_layers, hidden_size, model_activation
        self.model_learning_rate, self.model_weight_decay = model_learning_rate, model_weight_decay
        self.model_batch_size, self.model_holdout_ratio = model_batch_size, model_holdout_ratio
        self.model_max_holdout, self.model_patience, self.model_max_epochs = (
            model_max_holdout,
            model_patience,
            model_max_epochs,
        )
        self.model_train_freq, self.epoch_length = model_train_freq, epoch_length
        self.n_rollouts_per_step, self.rollout_schedule = n_rollouts_per_step, tuple(rollout_schedule)
        self.model_retain_epochs = model_retain_epochs
        self.model_data_ratio_schedule, self.model_data_mixing = (
            tuple(model_data_ratio_schedule),
            model_data_mixing,
        )
        self.termination_fn = termination_fn
        self.vagram_clip_quantile, self.vagram_use_all_vf = vagram_clip_quantile, vagram_use_all_vf
        self.mse_warmup_epochs = mse_warmup_epochs
        self._last_model_train: int | None = None
        self._model_train_count = 0
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------------------------ set-up
    def _env_id(self) -> str | None:
        if self.env is None:
            return None
        try:
            spec = self.env.get_attr("spec")[0]
        except Exception:  # noqa: BLE001 - any env without a spec counts as unknown
            return None
        return getattr(spec, "id", None)

    def _setup_model(self) -> None:
        super()._setup_model()
        obs_dim = int(np.prod(self.observation_space.shape))
        action_dim = int(np.prod(self.action_space.shape))
        self.actor_lr_schedule = FloatSchedule(
            self.learning_rate if self.actor_learning_rate is None else self.actor_learning_rate
        )
        # Seeds for the model's generators are drawn from NumPy's state, seeded by SB3's set_random_seed.
        seed = int(np.random.randint(2**31 - 1))  # noqa: NPY002
        self._model_rng = th.Generator().manual_seed(seed)
        self._rollout_rng = th.Generator(device=self.device).manual_seed(seed + 1)

        if self.termination_fn is None:
            self.termination_fn = get_termination_fn(self._env_id(), default="never")
        self.dynamics_model = EnsembleMLP(
            obs_dim + action_dim,
            obs_dim + 1,
            ensemble_size=self.ensemble_size,
            n_layers=self.n_layers,
            hidden_size=self.hidden_size,
            activation=self.model_activation,
            deterministic=self.model_loss != "nll",
            n_elites=self.n_elites,
            weight_decay=self.model_weight_decay,
        ).to(self.device)
        self._model_loss_fn = make_model_loss(
            self.model_loss,
            obs_dim,
            clip_quantile=self.vagram_clip_quantile,
            use_all_vf=self.vagram_use_all_vf,
        )
        self.dynamics_trainer = EnsembleTrainer(
            self.dynamics_model,
            learning_rate=self.model_learning_rate,
            batch_size=self.model_batch_size,
            holdout_ratio=self.model_holdout_ratio,
            max_holdout=self.model_max_holdout,
            max_epochs=self.model_max_epochs,
            patience=self.model_patience,
            sampling="bootstrap",
            loss=self._model_loss_fn,
        )
        self.model_optimizer = self.dynamics_trainer.optimizer
        self.model_env = ModelEnv(
            self.dynamics_model,
            obs_dim,
            termination_fn=self.termination_fn,
            propagation="random_model",
            generator=self._rollout_rng,
        )
        self.model_buffer = ModelReplayBuffer(
            self._model_buffer_capacity(self.rollout_length),
            self.observation_space,
            self.action_space,
            self.device,
        )

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "model_buffer",
            "model_env",
            "dynamics_trainer",
            "_model_loss_fn",
            "_model_rng",
            "_rollout_rng",
            "actor_lr_schedule",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, torch_variables = super()._get_torch_save_params()
        return [*state_dicts, "dynamics_model", "model_optimizer"], torch_variables

    # ------------------------------------------------------------------------------------ schedules
    @property
    def epoch(self) -> int:
        """MBPO epoch: ``(num_timesteps - learning_starts) // epoch_length``, 0 during the warm-up."""
        return max(self.num_timesteps - self.learning_starts, 0) // self.epoch_length

    @property
    def rollout_length(self) -> int:
        """Model rollout length of the current epoch (``rollout_schedule`` at ``epoch + 1``)."""
        return max(int(truncated_linear(self.rollout_schedule, self.epoch + 1)), 1)

    @property
    def model_data_ratio(self) -> float:
        """Probability (``"batch"``) or fraction (``"sample"``) of model data in a SAC batch this epoch."""
        return truncated_linear(self.model_data_ratio_schedule, self.epoch + 1)

    def _model_buffer_capacity(self, rollout_length: int) -> int:
        return int(rollout_length * self.n_rollouts_per_step * self.epoch_length * self.model_retain_epochs)

    def _model_due(self) -> bool:
        last = self._last_model_train
        return last is None or self.num_timesteps < last or self.num_timesteps - last >= self.model_train_freq

    # ------------------------------------------------------------------------------------ model learning
    def _real_transitions(self) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """All stored real transitions as tensors, row = replay index ``position * n_envs + env``.

        :return: ``obs (n, obs_dim)``, ``actions (n, action_dim)`` (scaled to [-1, 1]), ``next_obs``,
            ``rewards (n,)``.
        """
        rb = self.replay_buffer
        assert rb is not None
        n = rb.size()
        obs = rb.observations[:n].reshape(n * rb.n_envs, -1)
        next_obs = rb.next_observations[:n].reshape(n * rb.n_envs, -1)
        actions = rb.actions[:n].reshape(n * rb.n_envs, -1)
        rewards = rb.rewards[:n].reshape(-1)

        def to(x):
            return th.as_tensor(np.asarray(x, dtype=np.float32), device=self.device)

        return to(obs), to(actions), to(next_obs), to(rewards)

    def train_dynamics(self) -> EnsembleTrainResult:
        """Fit the ensemble on real data: inputs ``(s, a)``, targets ``[s' - s, r]`` (spec 2.1, 2.4)."""
        obs, actions, next_obs, rewards = self._real_transitions()
        inputs = th.cat([obs, actions], dim=1)
        targets = th.cat([next_obs - obs, rewards.unsqueeze(1)], dim=1)
        indices = th.arange(obs.shape[0], device=self.device)
        loss_fn = self._model_loss_fn
        frozen: list[th.nn.Parameter] = []
        if isinstance(loss_fn, ValueAwareLoss):
            loss_fn.begin_training(self.policy, next_obs, critic_version=self._n_updates)
            loss_fn.add_mse = self.epoch < self.mse_warmup_epochs
            # The critic is fixed while the model trains: no gradients accumulate in it.
            frozen = [p for p in self.policy.parameters() if p.requires_grad]
            for p in frozen:
                p.requires_grad_(False)
        self.policy.set_training_mode(False)
        start = time.perf_counter()
        try:
            result = self.dynamics_trainer.train(inputs, targets, indices, generator=self._model_rng)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        self._last_model_train = self.num_timesteps
        self._model_train_count += 1

        elites = result.elites
        name = self.model_loss
        self.logger.record(f"model/{name}_train_loss", result.train_losses[-1])
        self.logger.record(f"model/{name}_holdout_loss", float(np.mean(result.best_holdout[elites])))
        self.logger.record("model/holdout_best_member", float(np.min(result.best_holdout)))
        self.logger.record(
            "model/elites", " ".join(str(int(e)) for e in sorted(elites)), exclude="tensorboard"
        )
        self.logger.record("model/n_epochs", result.n_epochs)
        self.logger.record("model/n_trainings", self._model_train_count)
        self.logger.record("model/n_real_transitions", int(obs.shape[0]))
        self.logger.record("time/model_train_s", time.perf_counter() - start)
        if isinstance(loss_fn, ValueAwareLoss):
            self.logger.record("model/value_cache_rows", loss_fn.cache.n_computed)
        return result

    @th.no_grad()
    def rollout_model(self) -> int:
        """Roll out the model from real states with the current stochastic policy into the model buffer.

        ``n_rollouts_per_step * model_train_freq`` rollouts of ``rollout_length`` steps; a rollout stops at a
        termination (MBPO Alg. 2, mbrl-lib ``rollout_model_and_populate_sac_buffer``). Returns the number of
        transitions added.
        """
        start = time.perf_counter()
        length = self.rollout_length
        capacity = self._model_buffer_capacity(length)
        if capacity != self.model_buffer.buffer_size:
            self.model_buffer = self.model_buffer.resized(capacity)
        obs_table = self._real_transitions()[0]
        n_rollouts = self.n_rollouts_per_step * self.model_train_freq
        start_idx = th.randint(obs_table.shape[0], (n_rollouts,), generator=self._model_rng).to(self.device)
        obs = self.model_env.reset(obs_table[start_idx])
        deterministic = self.dynamics_model.deterministic
        self.policy.set_training_mode(False)
        added = 0
        for _ in range(length):
            actions = self.actor(obs, deterministic=False)
            next_obs, rewards, terminated = self.model_env.step(actions, deterministic=deterministic)
            self.model_buffer.extend(
                obs.cpu().numpy(),
                actions.cpu().numpy(),
                next_obs.cpu().numpy(),
                rewards.cpu().numpy(),
                terminated.float().cpu().numpy(),
            )
            added += obs.shape[0]
            alive = ~terminated
            if not alive.any():
                break
            obs = self.model_env.keep(alive)
        self.logger.record("model/rollout_length", length)
        self.logger.record("model/rollout_transitions", added)
        self.logger.record("model/buffer_size", self.model_buffer.size())
        self.logger.record("time/rollout_s", time.perf_counter() - start)
        return added

    # ------------------------------------------------------------------------------------ agent learning
    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        """SB3's schedule for critic and temperature; ``actor_learning_rate`` for the actor."""
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        super()._update_learning_rate([opt for opt in optimizers if opt is not self.actor.optimizer])
        actor_lr = self.actor_lr_schedule(self._current_progress_remaining)
        update_learning_rate(self.actor.optimizer, actor_lr)
        self.logger.record("train/actor_learning_rate", actor_lr)

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        """Retrain the model and refill the model buffer when due, then SAC updates on mixed batches."""
        if self._model_due():
            self.train_dynamics()
            self.rollout_model()
        real_buffer = self.replay_buffer
        assert real_buffer is not None
        sampler = MixedReplaySampler(
            real_buffer, self.model_buffer, self.model_data_ratio, self.model_data_mixing
        )
        # SAC.train samples `self.replay_buffer`; it sees the mixed sampler during these updates only.
        self.replay_buffer = sampler  # type: ignore[assignment]
        try:
            super().train(gradient_steps, batch_size)
        finally:
            self.replay_buffer = real_buffer
        self.logger.record("model/data_ratio", self.model_data_ratio)
        self.logger.record("model/model_sample_fraction", sampler.n_model_samples / max(sampler.n_samples, 1))
        self.logger.record("model/epoch", self.epoch)

    def learn(
        self: SelfMBPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "MBPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfMBPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    # ------------------------------------------------------------------------------------ buffers on disk
    def save_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """Pickle ``{"replay_buffer": real, "model_buffer": model}`` in one file (SB3's ``save_to_pkl``)."""
        assert self.replay_buffer is not None, "The replay buffer is not defined"
        save_to_pkl(
            path, {"replay_buffer": self.replay_buffer, "model_buffer": self.model_buffer}, self.verbose
        )

    def load_replay_buffer(
        self, path: str | pathlib.Path | io.BufferedIOBase, truncate_last_traj: bool = True
    ) -> None:
        """Load what :meth:`save_replay_buffer` wrote (or a plain SB3 replay buffer; model buffer kept)."""
        data = load_from_pkl(path, self.verbose)
        if isinstance(data, dict):
            real, model = data["replay_buffer"], data.get("model_buffer")
        else:
            real, model = data, None
        if not isinstance(real, ReplayBuffer):
            raise TypeError(f"Expected a ReplayBuffer in {path}, got {type(real).__name__}")
        real.device = self.device
        self.replay_buffer = real
        if model is not None:
            if not isinstance(model, ModelReplayBuffer):
                raise TypeError(f"Expected a ModelReplayBuffer in {path}, got {type(model).__name__}")
            model.device = self.device
            self.model_buffer = model
