"""MBPO: Model-Based Policy Optimization (Janner, Fu, Zhang, Levine 2019, arXiv:1906.08253), with the model
losses of VaGraM (Voelcker, Liao, Garg, Farahmand 2022, arXiv:2204.01464) as a choice.

MBPO is SAC (Haarnoja et al. 2018, arXiv:1801.01290) trained on short rollouts of a learned ensemble
dynamics model (Janner et al. 2019, Alg. 2)::

    for each environment step:
        every model_train_freq steps:
            train the ensemble on the real data (holdout, early stopping, elites)      # train_dynamics
            from n_rollouts_per_step * model_train_freq real start states, roll the
            model out for rollout_length(epoch) steps with the current policy,
            store the transitions in the model buffer                                 # rollout_model
        take one step in the real environment with the policy, store it               # SB3 collect_rollouts
        gradient_steps SAC updates on batches mixing model and real data
        with the ratio model_data_ratio(epoch)                                        # train
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, polyak_update, update_learning_rate
from stable_baselines3.sac import SAC

from sb3_mb.common.base_class import SafeAlgorithmMixin
from sb3_mb.common.checks import check_finite_gradients, check_finite_parameters
from sb3_mb.common.dynamics import RewardModel
from sb3_mb.common.ensemble import EnsembleMLP, EnsembleTrainer, EnsembleTrainResult
from sb3_mb.common.model_env import ModelEnv
from sb3_mb.common.sac_update import FusedSACUpdate, gradients_surely_finite
from sb3_mb.common.spaces import check_flat_box_spaces
from sb3_mb.common.symlog import SCALE_QUANTILE, fixed_scale, symexp, symlog
from sb3_mb.common.symlog import reward_scale as quantile_reward_scale
from sb3_mb.common.termination import TerminationFn, get_termination_fn
from sb3_mb.common.utils import frozen, resolve_policy_and_env
from sb3_mb.mbpo.buffers import MODEL_DATA_MIXINGS, MBPOReplayBuffer
from sb3_mb.mbpo.model_losses import MODEL_LOSSES, ValueAwareLoss, make_model_loss
from sb3_mb.mbpo.policies import MBPOPolicy, MlpPolicy

__all__ = ["MBPO", "truncated_linear"]

SelfMBPO = TypeVar("SelfMBPO", bound="MBPO")


def truncated_linear(schedule: tuple[float, float, float, float], x: float) -> float:
    """The schedule of MBPO's rollout length (Janner et al. 2019, App. C): ``(min_x, max_x, min_y, max_y)``.

    ``min_y`` for ``x <= min_x``, then linear up to ``max_y`` at ``max_x``, constant after.
    MBPO evaluates it at ``x = epoch + 1``.
    """
    min_x, max_x, min_y, max_y = schedule
    if x <= min_x:
        return float(min_y)
    frac = 1.0 if max_x <= min_x else min((x - min_x) / (max_x - min_x), 1.0)
    return float(min_y + frac * (max_y - min_y))


class MBPO(SafeAlgorithmMixin, SAC):
    """Model-Based Policy Optimization on SB3's SAC, with the model loss a constructor choice.

    ``MBPO(env)`` picks the policy (``"MlpPolicy"``: :class:`~sb3_mb.mbpo.policies.MBPOPolicy`); network
    sizes, SAC's and the ensemble's, are ``policy_kwargs`` (``net_arch``, ``model_net_arch``,
    ``model_ensemble_size``, ``model_n_elites``, ``model_activation_fn``, ``log_std_bounds``,
    ``model_normalize_targets``). The replay buffer is an :class:`~sb3_mb.mbpo.buffers.MBPOReplayBuffer`:
    real and model data in one SB3 buffer, saved together by ``save_replay_buffer``.

    Defaults: the Hopper configuration of MBPO (Janner et al. 2019, App. C) and VaGraM, except where marked
    *generic*; their Hopper runs also set ``learning_starts=10_000``, ``actor_learning_rate=3e-5``,
    ``target_update_interval=4``, ``target_entropy=-1``, ``model_batch_size=1024`` (VaGraM; its MLE runs use
    256) and ``policy_kwargs=dict(net_arch=[1024, 1024], log_std_bounds=(-5, 2))``.

    Choices: the value gradient of the VaGraM losses is taken at the real next state ``s'``, independently
    for each of the four value functions, clipped at the batch's 95% norm quantile and cached per replay
    index, invalidated whenever the critic (or the data) changed (see :mod:`sb3_mb.mbpo.model_losses`, which
    lists the quirks of the released code fixed here). Deviations: the warm-up (``learning_starts``) acts
    uniformly at random as SB3 does, not with the untrained SAC policy; SAC's optional L2 normalisation of
    the penultimate features is not implemented (off, as for the paper).

    SAC arguments are SB3's (see :class:`stable_baselines3.SAC`); ``gradient_steps`` (SAC updates per env
    step) is 20 (MBPO's ``G``). MBPO's own:

    :param replay_buffer_class: :class:`~sb3_mb.mbpo.buffers.MBPOReplayBuffer` or a subclass (``None``: it).
    :param actor_learning_rate: actor Adam learning rate (or schedule); ``None``: ``learning_rate``
        (generic). Paper Hopper: 3e-5 (critic and temperature 3e-4).
    :param model_loss: ``"nll"`` (Gaussian likelihood, MBPO's, a Gaussian head whose rollouts sample it),
        ``"mse"``, ``"vagram"`` (bounded VaGraM), ``"vagram_unbounded"`` or ``"itervaml"`` (all four with a
        deterministic head); see :mod:`sb3_mb.mbpo.model_losses`. It sets the policy's
        ``model_deterministic``.
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
        (:func:`truncated_linear`); Hopper ``(20, 150, 1, 5)``, distracted Hopper ``(20, 150, 1, 1)``.
    :param model_retain_epochs: epochs of model data kept in the model buffer (1); its capacity follows the
        rollout length: ``rollout_length * n_rollouts_per_step * epoch_length * model_retain_epochs``.
    :param model_data_ratio_schedule: ``(start_epoch, end_epoch, start, end)``: the share of model data in
        SAC's batches (:func:`truncated_linear`); Hopper ``(0, 20, 0, 0.95)``, distracted Hopper
        ``(0, 50, 0, 0.95)``.
    :param model_data_mixing: ``"batch"`` (VaGraM's, default) or ``"sample"`` (MBPO's released code); see
        :class:`~sb3_mb.mbpo.buffers.MBPOReplayBuffer`.
    :param termination_fn: ``term_fn(obs, act, next_obs) -> bool tensor`` for model rollouts. ``None``: looked
        up from the env id (:func:`sb3_mb.common.termination.get_termination_fn`); an unknown id warns and
        never terminates.
    :param vagram_clip_quantile: value-gradient clipping quantile of the VaGraM losses (0.95; ``None``
        disables).
    :param vagram_use_all_vf: VaGraM / IterVAML average over Q1, Q2 and both targets (True) or Q1, Q2.
    :param mse_warmup_epochs: epochs during which the value-aware losses add plain MSE (VaGraM: 1).
    :param reward_scale: ``kappa``: SAC trains on rewards divided by it, real and model alike (the buffer's
        ``sample``, :class:`~sb3_mb.mbpo.buffers.MBPOReplayBuffer`), so that its critic, its temperature and
        its target entropy see the same numbers whatever the reward's units; the model and the logged
        rewards stay in raw units. ``None`` (default, MBPO's): raw rewards; a positive number; or ``"auto"``:
        :func:`sb3_mb.common.symlog.reward_scale` (the 10 % quantile of the non-zero ``|r|``) of the real
        buffer at the first ``train()`` (the warm-up's rewards), kept from then on and saved with the agent.
        Generic (not in the papers), from the value scaling of DreamerV3 (Hafner et al. 2023,
        arXiv:2301.04104, Sec. 3).
    :param reward_scale_quantile: the quantile of ``reward_scale="auto"`` (0.1). Below ``kappa`` the symlog
        regressions (``symlog_critic``, the model's ``model_symlog_reward``) keep an absolute precision of a
        few hundredths of ``kappa``, above it a relative one: a lower quantile resolves smaller rewards.
    :param symlog_critic: SAC's critics regress ``symlog`` of their targets and the actor's per-state loss is
        divided by ``1 + |Q|`` (:meth:`_train_symlog_sac`); off (MBPO's SAC). Generic, after DreamerV3. The
        value-aware model losses then take the gradients of the critics' symlog outputs.
    :param fused_update: SAC's updates run as :class:`~sb3_mb.common.sac_update.FusedSACUpdate`: SB3's
        ``SAC.train`` (same losses, order, random numbers; parameters equal to float32 rounding) with fused
        Adam, no critic weight gradients in the actor's backward pass and no per-update ``.item()`` (on by
        default: faster than SB3's loop on one CPU thread, ``benchmarks/README.md``, MBPO speed), and the
        model ensemble's epochs take :class:`~sb3_mb.common.ensemble.EnsembleTrainer`'s fused step (fused
        Adam, weight decay on the gradients). Off: SB3's ``SAC.train`` itself and the trainer's reference
        step. The SAC part is ignored with gSDE or ``symlog_critic`` (their own loops).
    :param compile: ``torch.compile`` the fused update's losses (with ``fused_update``). Off by default: on
        one CPU thread the compiled update was slower than the eager fused one and its first call compiles
        for 10-120 s (``benchmarks/README.md``, MBPO speed); meant for GPUs.
    :raises ValueError: for observation spaces other than a flat ``Box``, action spaces other than ``Box``,
        an unknown ``model_loss`` / mixing mode, a ``model_deterministic`` policy kwarg that contradicts
        ``model_loss``, a policy or replay buffer class that is not MBPO's (or a subclass), or
        ``optimize_memory_usage=True``, a ``reward_scale`` other than ``None``, ``"auto"`` or a positive
        number, or a ``reward_scale_quantile`` outside ``[0, 1]``.
    """

    policy_aliases: ClassVar[dict[str, type[MBPOPolicy]]] = {"MlpPolicy": MlpPolicy}
    policy: MBPOPolicy
    replay_buffer: MBPOReplayBuffer
    dynamics_trainer: EnsembleTrainer
    reward_model: RewardModel | None
    model_env: ModelEnv

    def __init__(
        self,
        policy: str | type[MBPOPolicy] | GymEnv,
        env: GymEnv | str | None = None,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 1_000,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 20,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[MBPOReplayBuffer] | None = MBPOReplayBuffer,
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
        model_loss: str = "nll",
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
        reward_scale: float | str | None = None,
        reward_scale_quantile: float = SCALE_QUANTILE,
        symlog_critic: bool = False,
        fused_update: bool = True,
        compile: bool = False,
        _init_setup_model: bool = True,
    ):
        policy, env = resolve_policy_and_env(policy, env, self.policy_aliases, "MBPO", verbose)
        check_flat_box_spaces(env, "MBPO")
        if model_loss not in MODEL_LOSSES:
            raise ValueError(f"Unknown model_loss {model_loss!r}; expected one of {MODEL_LOSSES}")
        if model_data_mixing not in MODEL_DATA_MIXINGS:
            raise ValueError(
                f"model_data_mixing must be one of {MODEL_DATA_MIXINGS}, got {model_data_mixing!r}"
            )
        fixed_reward_scale = fixed_scale(reward_scale, "reward_scale")
        if not 0.0 <= reward_scale_quantile <= 1.0:
            raise ValueError(f"reward_scale_quantile must lie in [0, 1], got {reward_scale_quantile}")
        if optimize_memory_usage:
            raise ValueError(
                "MBPO reads next_observations from the replay buffer: optimize_memory_usage=False"
            )
        replay_buffer_class = replay_buffer_class or MBPOReplayBuffer
        if not issubclass(replay_buffer_class, MBPOReplayBuffer):
            raise ValueError(
                f"MBPO's replay_buffer_class must be MBPOReplayBuffer or a subclass (it holds the model data "
                f"too), got {replay_buffer_class.__name__}"
            )
        if isinstance(policy, type) and not issubclass(policy, MBPOPolicy):
            raise ValueError(
                f"MBPO's policy must be MBPOPolicy or a subclass (it holds the dynamics model), got "
                f"{policy.__name__}"
            )
        # The head follows from the loss: only the likelihood loss learns a variance.
        policy_kwargs = dict(policy_kwargs or {})
        deterministic = model_loss != "nll"
        if policy_kwargs.setdefault("model_deterministic", deterministic) != deterministic:
            raise ValueError(
                f"policy_kwargs model_deterministic={policy_kwargs['model_deterministic']} contradicts "
                f"model_loss={model_loss!r} (a Gaussian head for 'nll' only); leave it out, MBPO sets it"
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
            gradient_steps=gradient_steps,
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
        self.model_loss = model_loss
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
        self.reward_scale, self.symlog_critic = reward_scale, symlog_critic
        self.reward_scale_quantile = reward_scale_quantile
        self.fused_update, self.compile = fused_update, compile
        #: ``kappa`` in use: the given number, or set from the real buffer by the first ``train()`` ("auto").
        self._reward_scale = fixed_reward_scale
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
        self.replay_buffer.model_data_mixing = self.model_data_mixing
        self.actor_lr_schedule = FloatSchedule(
            self.learning_rate if self.actor_learning_rate is None else self.actor_learning_rate
        )
        # Seeds for the model's generators are drawn from NumPy's state, seeded by SB3's set_random_seed.
        seed = int(np.random.randint(2**31 - 1))  # noqa: NPY002
        self._model_rng = th.Generator().manual_seed(seed)
        self._rollout_rng = th.Generator(device=self.device).manual_seed(seed + 1)

        if self.termination_fn is None:
            self.termination_fn = get_termination_fn(self._env_id(), default="never")
        self._model_loss_fn = make_model_loss(
            self.model_loss,
            self.dynamics,
            clip_quantile=self.vagram_clip_quantile,
            use_all_vf=self.vagram_use_all_vf,
        )
        self.dynamics_trainer = self._model_trainer(
            self.dynamics, self._model_loss_fn, "MBPO dynamics ensemble"
        )
        self.model_optimizer = self.dynamics_trainer.optimizer
        self.reward_trainer: EnsembleTrainer | None = None
        reward_fn = None
        if self.reward_model is not None:
            # The separate reward model trains like the transition model; value-aware losses concern states.
            reward_loss = "nll" if self.model_loss == "nll" else "mse"
            self.reward_trainer = self._model_trainer(self.reward_model, reward_loss, "MBPO reward model")
            self.reward_optimizer = self.reward_trainer.optimizer
            reward_fn = self.reward_model.predict
        self.model_env = ModelEnv(
            self.dynamics, self.termination_fn, reward_fn=reward_fn, generator=self._rollout_rng
        )
        self._watch_sac_gradients()

    def _model_trainer(self, model: EnsembleMLP, loss: str | ValueAwareLoss, owner: str) -> EnsembleTrainer:
        """An :class:`~sb3_mb.common.ensemble.EnsembleTrainer` of ``model`` with the ``model_*`` settings."""
        return EnsembleTrainer(
            model,
            learning_rate=self.model_learning_rate,
            batch_size=self.model_batch_size,
            holdout_ratio=self.model_holdout_ratio,
            max_holdout=self.model_max_holdout,
            max_epochs=self.model_max_epochs,
            patience=self.model_patience,
            loss=loss,
            weight_decay=self.model_weight_decay,
            owner=owner,
            fused=self.fused_update,
        )

    def _create_aliases(self) -> None:
        super()._create_aliases()
        self.dynamics = self.policy.dynamics
        self.reward_model = self.policy.reward_model

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "dynamics",
            "reward_model",
            "model_env",
            "dynamics_trainer",
            "reward_trainer",
            "_model_loss_fn",
            "_model_rng",
            "_rollout_rng",
            "actor_lr_schedule",
            "_sac_step",
            "_fused_sac",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, torch_variables = super()._get_torch_save_params()
        extra = ["model_optimizer"] + (["reward_optimizer"] if self.policy.reward_model is not None else [])
        return [*state_dicts, *extra], torch_variables

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

    def _model_due(self) -> bool:
        last = self._last_model_train
        return last is None or self.num_timesteps < last or self.num_timesteps - last >= self.model_train_freq

    # ------------------------------------------------------------------------------------ model learning
    def train_dynamics(self) -> EnsembleTrainResult:
        """Fit the ensemble on every real transition (inputs ``[s, a]``, targets ``[s' - s, r]``), then, with
        ``model_reward="separate"`` (:class:`~sb3_mb.mbpo.policies.MBPOPolicy`), the reward model on
        ``([s, a, s'], r)`` with the same trainer settings (MSE, or NLL with ``model_loss="nll"``).

        Records the ``model/*`` losses, elites and epochs in the logger (``model/reward_holdout_loss`` and
        ``model/reward_n_epochs`` for the reward model).

        :return: the transition model's :class:`~sb3_mb.common.ensemble.EnsembleTrainResult`.
        """
        obs, actions, next_obs, rewards = self.replay_buffer.real_transitions()
        self._update_reward_scale()
        for model in (self.dynamics, self.reward_model):
            if model is not None and model.symlog_reward:
                model.reward_scale.fill_(self._reward_scale or 1.0)
        inputs, targets = self.dynamics.inputs(obs, actions), self.dynamics.targets(obs, next_obs, rewards)
        indices = th.arange(obs.shape[0], device=self.device)
        loss_fn = self._model_loss_fn
        agent_params: list[th.nn.Parameter] = []
        if isinstance(loss_fn, ValueAwareLoss):
            loss_fn.begin_training(self.policy, next_obs, critic_version=self._n_updates)
            loss_fn.add_mse = self.epoch < self.mse_warmup_epochs
            # The actor and critics are fixed while the model trains: no gradients accumulate in them.
            agent = (self.actor, self.critic, self.critic_target)
            agent_params = [p for net in agent for p in net.parameters()]
        self.policy.set_training_mode(False)
        start = time.perf_counter()
        with frozen(agent_params):
            result = self.dynamics_trainer.train(inputs, targets, indices, generator=self._model_rng)
        if self.reward_model is not None and self.reward_trainer is not None:
            reward_result = self.reward_trainer.train(
                self.reward_model.inputs(obs, actions, next_obs),
                self.reward_model.targets(rewards),
                indices,
                generator=self._model_rng,
            )
            self.logger.record(
                "model/reward_holdout_loss", float(np.mean(reward_result.best_holdout[reward_result.elites]))
            )
            self.logger.record("model/reward_n_epochs", reward_result.n_epochs)
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

        ``n_rollouts_per_step * model_train_freq`` rollouts of ``rollout_length`` steps, each step through a
        random elite; a rollout stops at a termination (Janner et al. 2019, Alg. 2). The model buffer first
        takes the capacity of this rollout length (``model_retain_epochs`` epochs of rollouts).

        :return: the number of transitions added.
        """
        start = time.perf_counter()
        length = self.rollout_length
        model_buffer_size = length * self.n_rollouts_per_step * self.epoch_length * self.model_retain_epochs
        self.replay_buffer.resize_model_buffer(model_buffer_size)
        model_buffer = self.replay_buffer.model_buffer
        obs_table = self.replay_buffer.real_transitions()[0]
        n_rollouts = self.n_rollouts_per_step * self.model_train_freq
        start_idx = th.randint(obs_table.shape[0], (n_rollouts,), generator=self._model_rng).to(self.device)
        obs = self.model_env.reset(obs_table[start_idx])
        self.policy.set_training_mode(False)
        added = 0
        for _ in range(length):
            actions = self.actor(obs, deterministic=False)
            next_obs, rewards, terminated = self.model_env.step(actions)
            model_buffer.extend(
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
        self.logger.record("model/buffer_size", model_buffer.size())
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
        """Retrain the model and refill the model buffer when due, then SAC updates on mixed batches.

        :raises FloatingPointError: if a model loss, a SAC loss or a SAC parameter is NaN or infinite (the
            message names the loss and the update).
        """
        if self._model_due():
            self.train_dynamics()
            self.rollout_model()
        buffer = self.replay_buffer
        self._update_reward_scale()
        buffer.model_data_ratio = self.model_data_ratio
        n_samples, n_model_samples = buffer.n_samples, buffer.n_model_samples
        self._sac_step = 0
        if self.symlog_critic:
            self._train_symlog_sac(gradient_steps, batch_size)
        elif self.fused_update and not self.use_sde:
            self._train_fused_sac(gradient_steps, batch_size)
        else:
            super().train(gradient_steps, batch_size)
        if gradient_steps > 0:
            self._check_sac_losses()
        from_model = (buffer.n_model_samples - n_model_samples) / max(buffer.n_samples - n_samples, 1)
        self.logger.record("model/data_ratio", self.model_data_ratio)
        self.logger.record("model/model_sample_fraction", from_model)
        self.logger.record("model/epoch", self.epoch)

    def _train_fused_sac(self, gradient_steps: int, batch_size: int) -> None:
        """SB3's ``SAC.train``, the same math in fused operations (``fused_update``), compiled with
        ``compile``: :class:`~sb3_mb.common.sac_update.FusedSACUpdate`. Logs SB3's ``train/*`` keys."""
        self.policy.set_training_mode(True)
        fused = getattr(self, "_fused_sac", None)
        if fused is None or fused.model is not self or fused.compile != self.compile:
            fused = self._fused_sac = FusedSACUpdate(self, compile=self.compile)
        self._update_learning_rate(fused.optimizers())
        env = self._vec_normalize_env
        means = fused(gradient_steps, batch_size, lambda n: self.replay_buffer.sample(n, env=env))
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, value in means.items():
            self.logger.record(f"train/{key}", value)

    def _train_symlog_sac(self, gradient_steps: int, batch_size: int) -> None:
        """SB3's ``SAC.train`` with a symlog critic (``symlog_critic``); the rest of the update is SB3's.

        Why an override: SB3 computes, regresses and maximises the critic in one loop with no hook between
        the steps. The critics output ``y`` and ``Q = symexp(y)`` (DreamerV3's value representation, Hafner
        et al. 2023, arXiv:2301.04104, Sec. 3); the critic loss is ``0.5 sum_i (y_i - symlog(target))^2``
        with SAC's soft target ``r + gamma (1 - d) (min_i symexp(y'_i) - alpha log pi(a'|s'))`` (``r`` as the
        buffer returns it, divided by ``reward_scale``); the actor's per-state SAC loss
        ``alpha log pi(a|s) - min_i Q_i(s, a)`` is divided by ``1 + |min_i Q_i(s, a)|`` (detached), the
        derivative of symlog: the same optimum in every state, gradients of comparable size at every value
        scale. Temperature and target updates are SAC's.
        """
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers)
        ent_coef_losses, ent_coefs, actor_losses, critic_losses = [], [], [], []
        for gradient_step in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            actions_pi, log_prob = self.actor.action_log_prob(data.observations)
            log_prob = log_prob.reshape(-1, 1)
            if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
                ent_coef = th.exp(self.log_ent_coef.detach())
                ent_coef_loss = -(self.log_ent_coef * (log_prob + self.target_entropy).detach()).mean()
                ent_coef_losses.append(ent_coef_loss.item())
                self.ent_coef_optimizer.zero_grad()
                ent_coef_loss.backward()
                self.ent_coef_optimizer.step()
            else:
                ent_coef = self.ent_coef_tensor
            ent_coefs.append(ent_coef.item())

            with th.no_grad():
                next_actions, next_log_prob = self.actor.action_log_prob(data.next_observations)
                next_q = symexp(th.cat(self.critic_target(data.next_observations, next_actions), dim=1))
                next_q = next_q.min(dim=1, keepdim=True)[0] - ent_coef * next_log_prob.reshape(-1, 1)
                target = symlog(data.rewards + (1 - data.dones) * self.gamma * next_q)
            outputs = self.critic(data.observations, data.actions)
            critic_loss = 0.5 * sum(((y - target) ** 2).mean() for y in outputs)
            critic_losses.append(critic_loss.item())
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()

            q_pi = symexp(th.cat(self.critic(data.observations, actions_pi), dim=1))
            q_pi = q_pi.min(dim=1, keepdim=True)[0]
            actor_loss = ((ent_coef * log_prob - q_pi) / (1 + q_pi.detach().abs())).mean()
            actor_losses.append(actor_loss.item())
            self.actor.optimizer.zero_grad()
            actor_loss.backward()
            self.actor.optimizer.step()
            if gradient_step % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/ent_coef", np.mean(ent_coefs))
        self.logger.record("train/actor_loss", np.mean(actor_losses))
        self.logger.record("train/critic_loss", np.mean(critic_losses))
        if ent_coef_losses:
            self.logger.record("train/ent_coef_loss", np.mean(ent_coef_losses))

    def _update_reward_scale(self) -> None:
        """With ``reward_scale="auto"``, ``kappa`` from the real rewards at the first call that sees a
        non-zero one; then hand ``kappa`` (or ``None``) to the buffer, which divides the rewards it samples by
        it."""
        if self.reward_scale == "auto" and self._reward_scale is None:
            rewards = self.replay_buffer.real_transitions()[3].cpu().numpy()
            self._reward_scale = quantile_reward_scale(rewards, self.reward_scale_quantile)
        self.replay_buffer.reward_scale = self._reward_scale
        if self._reward_scale is not None:
            self.logger.record("train/reward_scale", self._reward_scale)

    def _check_sac_losses(self) -> None:
        """Raise :class:`FloatingPointError` if SAC's last ``train`` call recorded a non-finite mean loss or
        left non-finite parameters (gradients were checked before each step: :meth:`_watch_sac_gradients`).
        """
        last = self._n_updates
        recorded = self.logger.name_to_value
        for key in ("critic_loss", "actor_loss", "ent_coef_loss", "ent_coef"):
            if f"train/{key}" in recorded:
                self._check_finite(recorded[f"train/{key}"], f"SAC {key.replace('_', ' ')}", step=last)
        networks = {"actor": self.actor, "critic": self.critic, "log_ent_coef": self.log_ent_coef}
        check_finite_parameters(networks, "MBPO", last)

    def _watch_sac_gradients(self) -> None:
        """Check SAC's gradients for NaN / inf before each optimizer step, naming the loss and the update.

        SB3's ``SAC.train`` computes, backpropagates and steps its three losses in one loop with no hook of
        its own between them. Rather than copy that rule here to check each loss (STYLE: hold the rule, don't
        fight the parent), a step pre-hook on each of its optimizers checks the gradients it is about to
        apply (torch's ``Optimizer.register_step_pre_hook``): a non-finite loss stops learning at the update
        where it appears, before the weights turn NaN (it used to surface later as a ``Normal(nan)`` error in
        SAC's actor). :meth:`_check_sac_losses` then checks the recorded means and the parameters.
        """
        self._sac_step = 0  # SAC updates made in the current train() call (SB3 counts them at its end)
        optimizers = [
            ("SAC entropy coefficient loss", self.ent_coef_optimizer),
            ("SAC critic loss", self.critic.optimizer),
            ("SAC actor loss", self.actor.optimizer),  # SAC steps it last in each update
        ]
        for what, optimizer in optimizers:
            if optimizer is not None:
                optimizer.register_step_pre_hook(self._gradient_hook(what, optimizer is self.actor.optimizer))

    def _gradient_hook(self, what: str, last_in_update: bool) -> Callable[..., None]:
        def hook(optimizer: th.optim.Optimizer, args: Any, kwargs: Any) -> None:
            # One cheap reduction first; the per-tensor check (and its message) only when it is not finite.
            if not gradients_surely_finite(optimizer):
                check_finite_gradients(optimizer, "MBPO", what, self._n_updates + self._sac_step + 1)
            if last_in_update:
                self._sac_step += 1

        return hook

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
