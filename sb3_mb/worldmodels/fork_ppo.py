"""PPO on a jointly trained world model: the controller of wassname's Sonic World Models, as an SB3 algorithm.

Source: ``wassname/world-models-sonic-pytorch``, ``world_models_sonic/helpers/deep_rl/ppo_agent.py`` (PPO of
ShangtongZhang's DeepRL with a world-model step and a curiosity reward); spec section 4.2. The world model
(V, M, inverse model, joint loss) is :mod:`sb3_mb.worldmodels.fork`.

One iteration of :class:`WorldModelsPPO` (SB3's PPO plus two steps, marked ``*``)::

    collect n_steps per env with the controller on features [z_t, c_t]                (SB3 collect_rollouts)
      * V and M run online in a VecEnv wrapper (WorldModelFeatureVecEnv): z_t = mu(o_t), c_t M's cell state
        after (z_{t-1}, a_{t-1}); reset to zeros at episode starts; the frames are recorded
    compute returns and advantages                                                    (SB3)
    * if train_world_model: one pass of the joint loss over the rollout's transitions, in minibatches,
      each from M's recorded state (the fork's one update per PPO iteration)
      * with curiosity: per transition, reduction = loss before the minibatch's update - loss after it
        (both with the means of V and M, BatchNorm on the minibatch's statistics),
        r_c = curiosity_weight * ((reduction - mean) / std - curiosity_boredom)   (running mean / std)
        added to the reward (or replacing it: curiosity_only), then returns and advantages again
    PPO's update on the rollout buffer                                                (SB3 train)

The controller never sees a gradient of the world model (its features are detached, as in the fork), so the
world model has its own Adam (``world_model_learning_rate``; the fork's curiosity run: 5e-6; its README: the
controller learns only with a world-model lr well below 1e-5 or a frozen model).

How it fits SB3:

- :class:`WorldModelsPPO` derives from SB3's :class:`~stable_baselines3.PPO` (and
  :class:`~sb3_mb.common.base_class.SafeAlgorithmMixin`: atomic saves, checked loads, non-finite checks). Its
  public observation space is the env's images: ``predict(images, state, episode_start)`` carries M's state
  (:class:`~sb3_mb.worldmodels.policies.WorldModelsState`), so ``evaluate_policy`` and ``EvalCallback`` run
  on the image env unchanged; ``get_env()`` gives the image env.
- The rollout buffer and the controller (an :class:`~stable_baselines3.common.policies.ActorCriticPolicy`)
  work on the feature vectors; :class:`WorldModelsPPOPolicy` holds the world model as a submodule (saved
  with the policy) and builds the actor-critic on the feature space.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.preprocessing import is_image_space, maybe_transpose
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import FloatSchedule, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from torch import nn

from sb3_mb.common.base_class import SafeAlgorithmMixin
from sb3_mb.common.utils import resolve_policy_and_env
from sb3_mb.worldmodels.fork import ForkWorldModel, LossWeights, WorldModelLosses, resolve_loss_weights
from sb3_mb.worldmodels.policies import WorldModelsState

__all__ = ["WorldModelFeatureVecEnv", "WorldModelsPPO", "WorldModelsPPOPolicy", "curiosity_reward"]

SelfWorldModelsPPO = TypeVar("SelfWorldModelsPPO", bound="WorldModelsPPO")


def check_fork_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """Raise a clear error unless the observations are uint8 images ``(C, H, W)`` and the actions Discrete.

    :raises ValueError: naming the space and what is expected.
    """
    if not isinstance(action_space, spaces.Discrete):
        raise ValueError(
            f"WorldModelsPPO needs a Discrete action space (the inverse model's), got {action_space}"
        )
    if not (
        isinstance(observation_space, spaces.Box)
        and len(observation_space.shape) == 3
        and is_image_space(observation_space, check_channels=False)
    ):
        raise ValueError(
            "WorldModelsPPO needs a uint8 image observation space (C, H, W) (channel-first, as after "
            f"VecTransposeImage), got the observation space {observation_space}"
        )


def curiosity_reward(
    reduction: np.ndarray, stats: RunningMeanStd, weight: float, boredom: float, epsilon: float = 1e-8
) -> np.ndarray:
    """The fork's curiosity reward of world-model loss reductions ``(N,)`` (``ppo_agent.py``).

    ``stats`` is updated with ``reduction`` first, then ``weight * ((reduction - mean) / std - boredom)``:
    a reduction ``boredom`` standard deviations above the running mean scores 0, a larger one is positive
    (learnt something), a smaller one negative (boring).

    :param reduction: loss before an update minus loss after it, per transition.
    :param stats: running mean / variance of the reductions (SB3's ``RunningMeanStd(shape=())``), updated.
    :param weight: the curiosity weight (the fork: 5e-6). :param boredom: ``k`` std subtracted (the fork: 1).
    :return: ``(N,)`` float32 rewards.
    """
    reduction = np.asarray(reduction, dtype=np.float64).reshape(-1)
    stats.update(reduction)
    normalised = (reduction - stats.mean) / np.sqrt(stats.var + epsilon)
    return (weight * (normalised - boredom)).astype(np.float32)


class WorldModelsPPOPolicy(ActorCriticPolicy):
    """SB3's actor-critic on the world model's features, holding the world model (:class:`ForkWorldModel`).

    Built from the image space like any SB3 policy; its own ``observation_space`` is the feature space
    ``Box((z_dim + hidden_size,))`` (what the rollout buffer stores), the images' is ``image_space``.
    The fork's controller: 64 -> 64 ReLU (its body is shared by actor and critic; SB3's ``net_arch=[64, 64]``
    gives each its own), a categorical actor and a critic.

    :param observation_space: uint8 images ``(C, H, W)``. :param action_space: ``Discrete``.
    :param lr_schedule: PPO's learning rate. :param net_arch: SB3's (``[64, 64]``).
    :param activation_fn: (ReLU). :param image_size: V's input side (128; frames are resized to it).
    :param z_dim: (512). :param hidden_size: M's LSTM units (1024). :param n_mixtures: (5).
    :param vae_channels: V's stride-2 channels ((128, 192, 256, 320)). :param stem_channels: (64).
    :param bottleneck_channels: (128). :param inverse_hidden_size: (64).
    :param controller_input: ``"cell"`` (the fork's ``[z, c]``) or ``"hidden"`` (``[z, h]``).
    :param kwargs: the rest of :class:`~stable_baselines3.common.policies.ActorCriticPolicy`'s arguments.
    :raises ValueError: for unsupported spaces or an unknown ``controller_input``.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        image_size: int = 128,
        z_dim: int = 512,
        hidden_size: int = 1024,
        n_mixtures: int = 5,
        vae_channels: tuple[int, ...] = (128, 192, 256, 320),
        stem_channels: int = 64,
        bottleneck_channels: int = 128,
        inverse_hidden_size: int = 64,
        controller_input: str = "cell",
        **kwargs: Any,
    ):
        check_fork_spaces(observation_space, action_space)
        self.world_model_kwargs = dict(
            image_size=image_size,
            z_dim=z_dim,
            hidden_size=hidden_size,
            n_mixtures=n_mixtures,
            vae_channels=tuple(vae_channels),
            stem_channels=stem_channels,
            bottleneck_channels=bottleneck_channels,
            inverse_hidden_size=inverse_hidden_size,
            controller_input=controller_input,
        )
        features_space = spaces.Box(-np.inf, np.inf, (z_dim + hidden_size,), np.float32)
        super().__init__(
            features_space,
            action_space,
            lr_schedule,
            net_arch=[64, 64] if net_arch is None else net_arch,
            activation_fn=activation_fn,
            **kwargs,
        )
        self.image_space = observation_space
        # Built after super().__init__, so PPO's optimizer (made in _build) holds the controller only.
        self.world_model = ForkWorldModel(
            observation_space.shape[0], int(action_space.n), **self.world_model_kwargs
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(observation_space=self.image_space, **self.world_model_kwargs)
        return data

    def set_training_mode(self, mode: bool) -> None:
        """SB3's switch for the controller; the world model stays in eval mode (BatchNorm's running
        statistics) except inside its own update."""
        super().set_training_mode(mode)
        self.world_model.train(False)


class WorldModelFeatureVecEnv(VecEnvWrapper):
    """Images in, world-model features out: runs V and M online over a VecEnv of uint8 ``(C, H, W)`` frames.

    Observations become ``[mu(o_t), c_t]`` (or ``[mu(o_t), h_t]``) float32 ``(n_envs, z_dim + hidden_size)``;
    M's state ``(h_t, c_t)`` steps with ``(z_t, a_t)`` after every env step and is zeroed where an episode
    ended. A ``terminal_observation`` in the infos is replaced by its features (SB3's PPO bootstraps time-outs
    with it). Between :meth:`start_recording` and :meth:`stop_recording` every transition is kept for the
    world model's update: frames, actions, next frames (the terminal frame at an episode end), M's state when
    the action was chosen and the env's rewards.

    :param venv: the image VecEnv (channel-first). :param world_model: the :class:`ForkWorldModel`.
    :param check: optional ``check(values)`` called with ``{"reward": ..., "observation": ...}`` of each step
        before anything is used (the algorithm's non-finite check).
    """

    def __init__(self, venv: VecEnv, world_model: ForkWorldModel, check: Any = None):
        space = spaces.Box(-np.inf, np.inf, (world_model.features_dim,), np.float32)
        super().__init__(venv, observation_space=space)
        self.world_model, self.check = world_model, check
        self._images: np.ndarray | None = None
        self._z: th.Tensor | None = None
        self._state: tuple[th.Tensor, th.Tensor] | None = None
        self._actions: np.ndarray | None = None
        self.record: dict[str, list[np.ndarray]] | None = None

    @property
    def _device(self) -> th.device:
        return self.world_model.vae.mu.weight.device

    def _encode(self, images: np.ndarray) -> th.Tensor:
        return self.world_model.encode(th.as_tensor(images, device=self._device))

    def _features(self, z: th.Tensor, state: tuple[th.Tensor, th.Tensor]) -> np.ndarray:
        return self.world_model.features(z, state).cpu().numpy().astype(np.float32)

    def reset(self) -> np.ndarray:
        images = self.venv.reset()
        if self.check is not None:
            self.check({"observation": images})
        self._images = np.asarray(images)
        self._state = self.world_model.initial_state(self.num_envs)
        self._z = self._encode(self._images)
        return self._features(self._z, self._state)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)
        self.venv.step_async(actions)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        images, rewards, dones, infos = self.venv.step_wait()
        if self.check is not None:
            self.check({"reward": rewards, "observation": images})
        assert self._z is not None and self._state is not None and self._actions is not None
        actions = th.as_tensor(self._actions, device=self._device)
        state = self.world_model.step(self._z, actions, self._state)
        next_images = np.array(images, copy=True)
        for i, done in enumerate(dones):
            terminal = infos[i].get("terminal_observation") if done else None
            if terminal is not None:
                next_images[i] = terminal
                z_terminal = self._encode(np.asarray(terminal)[None])
                infos[i]["terminal_observation"] = self._features(
                    z_terminal, (state[0][i : i + 1], state[1][i : i + 1])
                )[0]
        if self.record is not None:
            for key, value in (
                ("images", self._images),
                ("actions", self._actions),
                ("next_images", next_images),
                ("hidden", self._state[0].cpu().numpy()),
                ("cell", self._state[1].cpu().numpy()),
                ("rewards", np.asarray(rewards, dtype=np.float32)),
            ):
                self.record[key].append(np.array(value, copy=True))
        keep = th.as_tensor(~np.asarray(dones, dtype=bool), device=self._device, dtype=th.float32)[:, None]
        self._state = (state[0] * keep, state[1] * keep)
        self._images = np.asarray(images)
        self._z = self._encode(self._images)
        return self._features(self._z, self._state), rewards, dones, infos

    def start_recording(self) -> None:
        """Keep the transitions from now on (the previous record is dropped)."""
        self.record = {key: [] for key in ("images", "actions", "next_images", "hidden", "cell", "rewards")}

    def stop_recording(self) -> dict[str, np.ndarray]:
        """The recorded transitions, each ``(n_steps, n_envs, ...)``, and stop recording.

        :raises RuntimeError: if :meth:`start_recording` was not called.
        """
        if self.record is None:
            raise RuntimeError("stop_recording() without start_recording()")
        record, self.record = self.record, None
        return {key: np.stack(value) for key, value in record.items() if value}


class WorldModelsPPO(SafeAlgorithmMixin, PPO):
    """PPO on a jointly trained world model with an optional curiosity reward (module docstring).

    ``WorldModelsPPO("CnnPolicy", env).learn(n)``; ``WorldModelsPPO(env)`` picks ``CnnPolicy``. The PPO
    arguments are SB3's with the fork's no-curiosity settings as defaults (spec 4.2: Adam 1e-4, rollout 432,
    8 minibatches, 3 epochs, gamma 0.99, GAE 0.95, clip 0.1 also for the value, entropy 0.02, value weight
    0.5, grad-norm clip 0.5, normalised advantages); the network sizes are ``policy_kwargs`` of
    :class:`WorldModelsPPOPolicy`. The fork's curiosity run: ``curiosity_weight=5e-6``,
    ``curiosity_only=True``, ``world_model_learning_rate=5e-6``, ``loss_weights="curiosity"``, rollout 20.

    :param policy: ``"CnnPolicy"`` or a :class:`WorldModelsPPOPolicy` subclass; or the env, ``env`` left out.
    :param env: uint8 image observations (channel-first or -last), ``Discrete`` actions.
    :param train_world_model: update the world model once per rollout (False: frozen, e.g. pretrained).
    :param world_model_learning_rate: the world model's Adam learning rate.
    :param world_model_batch_size: transitions per world-model update (None: PPO's ``batch_size``).
    :param world_model_max_grad_norm: global-norm clip of the world model's gradient (None: none, the fork).
    :param loss_weights: a preset of :data:`~sb3_mb.worldmodels.fork.LOSS_WEIGHTS` or ``(kld, finv, vae)``.
    :param curiosity_weight: weight of the curiosity reward (0: off).
    :param curiosity_boredom: standard deviations subtracted from the normalised loss reduction.
    :param curiosity_only: the reward is the curiosity reward alone (SB3's time-out bootstrap is kept).
    :raises ValueError: for unsupported spaces, an unknown loss-weight preset, curiosity without training the
        world model, or a negative weight.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"CnnPolicy": WorldModelsPPOPolicy}
    policy: WorldModelsPPOPolicy

    def __init__(
        self,
        policy: str | type[WorldModelsPPOPolicy] | GymEnv,
        env: GymEnv | str | None = None,
        learning_rate: float | Schedule = 1e-4,
        n_steps: int = 432,
        batch_size: int = 54,
        n_epochs: int = 3,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.1,
        clip_range_vf: float | Schedule | None = 0.1,
        normalize_advantage: bool = True,
        ent_coef: float = 0.02,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        target_kl: float | None = None,
        train_world_model: bool = True,
        world_model_learning_rate: float = 5e-6,
        world_model_batch_size: int | None = None,
        world_model_max_grad_norm: float | None = None,
        loss_weights: str | LossWeights | tuple[float, float, float] = "curiosity",
        curiosity_weight: float = 0.0,
        curiosity_boredom: float = 1.0,
        curiosity_only: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        policy, env = resolve_policy_and_env(policy, env, self.policy_aliases, "WorldModelsPPO", verbose)
        if env is not None:
            obs_space = env.observation_space
            if (
                isinstance(obs_space, spaces.Box)
                and len(obs_space.shape) == 3
                and obs_space.shape[-1] in (1, 3)
            ):
                obs_space = spaces.Box(0, 255, (obs_space.shape[-1], *obs_space.shape[:2]), obs_space.dtype)
            check_fork_spaces(obs_space, env.action_space)
        if curiosity_weight < 0:
            raise ValueError(f"curiosity_weight must be >= 0, got {curiosity_weight}")
        if (curiosity_weight > 0 or curiosity_only) and not train_world_model:
            raise ValueError(
                "the curiosity reward measures the world model's learning: it needs train_world_model"
            )
        resolve_loss_weights(loss_weights)  # fail early on a bad preset
        super().__init__(
            policy,
            env,  # type: ignore[arg-type]
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        self.train_world_model = train_world_model
        self.world_model_learning_rate = world_model_learning_rate
        self.world_model_batch_size = world_model_batch_size
        self.world_model_max_grad_norm = world_model_max_grad_norm
        self.loss_weights = loss_weights
        self.curiosity_weight, self.curiosity_boredom = curiosity_weight, curiosity_boredom
        self.curiosity_only = curiosity_only
        #: running statistics of the loss reductions (saved with the model)
        self.curiosity_stats = RunningMeanStd(shape=())
        self._world_model_updates = 0
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        """Policy first, then the rollout buffer on the policy's feature space, then the feature wrapper.

        Overrides PPO's (and ``OnPolicyAlgorithm``'s) ``_setup_model``, which sizes the rollout buffer by the
        algorithm's observation space, here the images, before the policy exists.
        """
        check_fork_spaces(self.observation_space, self.action_space)
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, use_sde=False, **self.policy_kwargs
        ).to(self.device)
        self.world_model_optimizer = th.optim.Adam(
            self.policy.world_model.parameters(), lr=self.world_model_learning_rate
        )
        buffer_class = self.rollout_buffer_class or RolloutBuffer
        self.rollout_buffer = buffer_class(
            self.n_steps,
            self.policy.observation_space,
            self.action_space,
            device=self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            **self.rollout_buffer_kwargs,
        )
        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)
        if self.env is not None:
            self.env = self._wrap_features(self.env)

    def _wrap_features(self, env: VecEnv) -> WorldModelFeatureVecEnv:
        return WorldModelFeatureVecEnv(env, self.policy.world_model, check=self._check_step)

    def _check_step(self, values: dict[str, Any]) -> None:
        self._check_env_data(f"at env step {self.num_timesteps + self.n_envs}", values)

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """SB3's ``set_env`` with the image env (checked against the image space), then the feature
        wrapper."""
        super().set_env(env, force_reset=force_reset)
        assert self.env is not None
        self.env = self._wrap_features(self.env)

    def get_env(self) -> VecEnv | None:
        """The image env (under the feature wrapper), as given: what callbacks and ``EvalCallback`` see."""
        return self.env.venv if isinstance(self.env, WorldModelFeatureVecEnv) else self.env

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        return [*state_dicts, "world_model_optimizer"], variables

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "world_model_optimizer"]

    # ------------------------------------------------------------------------------------ acting
    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, WorldModelsState]:
        """Actions for images, carrying M's state (RecurrentPPO's contract).

        :param observation: uint8 images ``(C, H, W)`` / ``(H, W, C)`` or a batch ``(n_envs, ...)``.
        :param state: :class:`~sb3_mb.worldmodels.policies.WorldModelsState` ``(hidden, cell)``, each
            ``(n_envs, hidden_size)``; None: zeros.
        :param episode_start: ``(n_envs,)`` bools; True zeroes that env's state.
        :param deterministic: the most likely action instead of a sample.
        :return: actions ``(n_envs,)`` (``()`` for one unbatched image) and the next state.
        """
        self.policy.set_training_mode(False)
        obs = np.asarray(observation)
        vectorized = obs.ndim == 4
        obs = maybe_transpose(obs if vectorized else obs[None], self.observation_space)
        world_model = self.policy.world_model
        device = self.device
        if state is None:
            hidden, cell = world_model.initial_state(len(obs))
        else:
            hidden = th.as_tensor(np.asarray(state[0]), device=device, dtype=th.float32)
            cell = th.as_tensor(np.asarray(state[1]), device=device, dtype=th.float32)
        if episode_start is not None:
            keep = th.as_tensor(1.0 - np.asarray(episode_start, dtype=np.float32), device=device)[:, None]
            hidden, cell = hidden * keep, cell * keep
        z = world_model.encode(th.as_tensor(obs, device=device))
        with th.no_grad():
            actions = self.policy._predict(
                world_model.features(z, (hidden, cell)), deterministic=deterministic
            )
        hidden, cell = world_model.step(z, actions, (hidden, cell))
        action_array = actions.cpu().numpy().reshape(len(obs))
        next_state = WorldModelsState(hidden.cpu().numpy(), cell.cpu().numpy())
        return (action_array if vectorized else action_array[0]), next_state

    # ------------------------------------------------------------------------------------ learning
    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """SB3's ``collect_rollouts`` with the frames recorded, then the world model's update and the
        curiosity reward (both before PPO's update; the advantages are computed again with the new rewards).
        """
        features_env = env if isinstance(env, WorldModelFeatureVecEnv) else None
        if features_env is not None and self.train_world_model:
            features_env.start_recording()
        try:
            continue_training = super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        finally:
            record = (
                features_env.stop_recording() if features_env is not None and features_env.record else None
            )
        if continue_training and record:
            self._update_world_model(record, rollout_buffer)
        return continue_training

    def _update_world_model(self, record: dict[str, np.ndarray], rollout_buffer: RolloutBuffer) -> None:
        """One pass of the joint loss over the rollout (minibatches of ``world_model_batch_size``); with
        curiosity, the per-transition loss reduction of each minibatch's update becomes a reward."""
        world_model, weights = self.policy.world_model, resolve_loss_weights(self.loss_weights)
        n_steps, n_envs = record["actions"].shape
        n = n_steps * n_envs
        data = {key: th.as_tensor(value.reshape(n, *value.shape[2:])) for key, value in record.items()}
        batch_size = self.world_model_batch_size or self.batch_size
        curious = self.curiosity_weight > 0 or self.curiosity_only
        reduction = np.zeros(n, dtype=np.float64)
        sums: dict[str, float] = {}
        order = th.randperm(n)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            batch = {key: value[index].to(self.device) for key, value in data.items()}
            args = (batch["images"], batch["actions"], batch["next_images"], (batch["hidden"], batch["cell"]))
            if curious:
                before = self._measure(args, weights)
            world_model.train()
            losses = world_model.losses(*args, weights=weights, sample=True)
            terms = {name: value.mean() for name, value in losses._asdict().items()}
            self._check_finite(terms, "world-model loss", step=self._world_model_updates)
            self.world_model_optimizer.zero_grad()
            terms["loss"].backward()
            if self.world_model_max_grad_norm is not None:
                nn.utils.clip_grad_norm_(world_model.parameters(), self.world_model_max_grad_norm)
            self.world_model_optimizer.step()
            world_model.eval()
            self._world_model_updates += 1
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) * len(index)
            if curious:
                reduction[index.numpy()] = before - self._measure(args, weights)
        for name, value in sums.items():
            self.logger.record(f"world_model/{name}", value / n)
        self.logger.record("world_model/n_updates", self._world_model_updates)
        if not curious:
            return
        curiosity = curiosity_reward(
            reduction, self.curiosity_stats, self.curiosity_weight, self.curiosity_boredom
        )
        curiosity = curiosity.reshape(n_steps, n_envs)
        extrinsic = record["rewards"]
        if self.curiosity_only:
            rollout_buffer.rewards -= extrinsic  # keeps SB3's time-out bootstrap, drops the env's reward
        rollout_buffer.rewards += curiosity
        self.logger.record("rollout/curiosity_reward", float(curiosity.mean()))
        self.logger.record("rollout/extrinsic_reward", float(extrinsic.mean()))
        self.logger.record("rollout/loss_reduction", float(reduction.mean()))
        with th.no_grad():
            last_values = self.policy.predict_values(obs_as_tensor(self._last_obs, self.device))  # type: ignore[arg-type]
        rollout_buffer.compute_returns_and_advantage(last_values=last_values, dones=self._last_episode_starts)

    def _measure(self, args: tuple[Any, ...], weights: LossWeights) -> np.ndarray:
        """Per-transition joint loss with the means of V and M (no sampling noise) and BatchNorm on the
        minibatch's statistics, as in the update; BatchNorm's running statistics are left as they were, so the
        before / after difference is the weights' change alone."""
        world_model = self.policy.world_model
        saved = [buffer.clone() for buffer in world_model.buffers()]
        world_model.train()
        with th.no_grad():
            losses: WorldModelLosses = world_model.losses(*args, weights=weights, sample=False)
            for buffer, value in zip(world_model.buffers(), saved, strict=True):
                buffer.copy_(value)
        world_model.eval()
        return losses.loss.double().cpu().numpy()
