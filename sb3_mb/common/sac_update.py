"""SB3's SAC update, fused and optionally compiled: the same math as ``stable_baselines3.SAC.train`` in
fewer, larger operations.

SAC (Haarnoja et al. 2018, arXiv:1812.05905, Alg. 1) as SB3 orders one update::

    a~, log pi(a~|s) = actor(s, eps)                                        # reparameterised, eps ~ N(0, 1)
    temperature step on  -log(alpha) (log pi(a~|s) + target_entropy)        # alpha = exp(log alpha) before it
    y = r + gamma (1 - d) (min_i Q'_i(s', a') - alpha log pi(a'|s')),  a' = actor(s', eps')
    critic step on  0.5 sum_i mean((Q_i(s, a) - y)^2)
    actor step on  mean(alpha log pi(a~|s) - min_i Q_i(s, a~))              # with the critic just stepped
    every target_update_interval updates: Q' <- (1 - tau) Q' + tau Q

What is fused (after LeanRL's SAC, github.com/pytorch-labs/LeanRL ``sac_continuous_action_torchcompile.py``,
written anew here, without tensordict): the three losses are three functions of tensors only, so
``torch.compile`` can trace each into one graph (forward and backward); the noise ``eps``, ``eps'`` is drawn
into preallocated buffers outside them, in SB3's order and with SB3's generator, so the compiled and the
eager update consume the same random numbers as ``SAC.train``; the actor's backward pass skips the critics'
weight gradients (SB3 computes and discards them); the temperature's gradient is written in closed form;
the optimizers run their ``fused`` (or ``foreach``) Adam kernels; a ReLU right after a linear layer runs
in place (:func:`relu_in_place`: the linear layer's backward does not need its output, so one activation
tensor less per layer); the target update is two ``_foreach`` calls; the losses go to a preallocated
table, read once per ``train`` call (SB3 calls ``.item()`` four times per update).

Not supported here (the caller keeps SB3's loop for them): gSDE (``use_sde``) and actors whose log-std is
not an output of the network.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch as th
import torch.nn.functional as F
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.sac import SAC

from sb3_mb.common.utils import foreach_polyak_update, frozen, own_parameters

__all__ = ["OPTIMIZER_IMPLS", "FusedSACUpdate", "gradients_surely_finite", "relu_in_place", "set_adam_impl"]

#: ``set_adam_impl(impl=...)``: torch's Adam implementations (``"single"``: the per-tensor loop;
#: ``"default"``: torch's choice, the per-tensor loop on CPU and ``foreach`` on CUDA).
OPTIMIZER_IMPLS = ("fused", "foreach", "single", "default")

_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))
_SQUASH_EPSILON = 1e-6  # SB3's SquashedDiagGaussianDistribution epsilon


def set_adam_impl(optimizer: th.optim.Optimizer, impl: str) -> None:
    """Switch an existing ``torch.optim.Adam`` (or ``AdamW``) between its implementations in place.

    The update rule is the same in all of them (torch's Adam), only the kernels differ: ``"fused"`` (one
    kernel over all tensors, CPU and CUDA), ``"foreach"`` (one kernel per operation over all tensors),
    ``"single"`` (a Python loop over tensors) or ``"default"`` (torch's choice, as an optimizer is built:
    ``"single"`` on CPU, ``"foreach"`` on CUDA). The step counters move to the
    parameters' device when ``"fused"`` needs them there. Other optimizers are left alone.

    :raises ValueError: for an unknown ``impl``.
    """
    if impl not in OPTIMIZER_IMPLS:
        raise ValueError(f"Unknown optimizer impl {impl!r}; expected one of {OPTIMIZER_IMPLS}")
    if not isinstance(optimizer, th.optim.Adam | th.optim.AdamW):
        return
    for group in optimizer.param_groups:
        if group.get("differentiable") or group.get("capturable"):
            continue
        group["fused"] = impl == "fused" if impl != "default" else None
        group["foreach"] = impl == "foreach" if impl != "default" else None
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if th.is_tensor(step):
                optimizer.state[p]["step"] = step.to(p.device if impl == "fused" else "cpu")


def gradients_surely_finite(optimizer: th.optim.Optimizer) -> bool:
    """``True`` if the gradients ``optimizer`` holds are all finite, by one sum per tensor and one sync.

    A NaN or an infinity makes its tensor's sum non-finite, so ``True`` is certain; ``False`` may also mean
    finite gradients whose sum overflows float32 (``|sum| > 3.4e38``): check tensor by tensor then
    (:func:`~sb3_mb.common.checks.check_finite_gradients`, which names the culprit). ``th.isfinite`` per
    tensor costs ~40 x more on one CPU thread (it builds boolean tensors).
    """
    sums = [p.grad.sum() for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return not sums or bool(th.stack(sums).sum().isfinite())


def relu_in_place(*modules: th.nn.Module) -> int:
    """Set ``inplace=True`` on every ``nn.ReLU`` that directly follows an ``nn.Linear`` in an
    ``nn.Sequential`` of ``modules`` (SB3's ``create_mlp`` layout); the outputs are unchanged.

    Safe for autograd: a linear layer's backward pass needs its input and weight, not its output, and ReLU
    saves its own output. A ReLU after anything else (whose output may be needed) is left alone.

    :return: the number of ReLUs switched.
    """
    switched = 0
    for module in modules:
        for seq in module.modules():
            if not isinstance(seq, th.nn.Sequential):
                continue
            layers = list(seq)
            for before, layer in zip(layers, layers[1:], strict=False):
                if isinstance(layer, th.nn.ReLU) and isinstance(before, th.nn.Linear) and not layer.inplace:
                    layer.inplace = True
                    switched += 1
    return switched


class FusedSACUpdate:
    """SB3's SAC update (module docstring) on a SAC model's own networks, optimizers and settings.

    Reads ``model.actor``, ``critic``, ``critic_target``, their optimizers, ``log_ent_coef`` /
    ``ent_coef_optimizer`` (or the fixed ``ent_coef_tensor``), ``target_entropy``, ``gamma``, ``tau``,
    ``target_update_interval`` and ``batch_norm_stats`` when it is called, so it follows loading and learning
    rate schedules. It holds no parameters of its own.

    :param model: an SB3 ``SAC`` (or subclass) with its networks built (``_setup_model`` done).
    :param compile: ``torch.compile`` the three loss functions (forward and backward). The first call of
        each traces and compiles (seconds); later calls reuse the code unless the shapes change.
    :param compile_mode: ``torch.compile``'s ``mode`` (``"default"``; ``"reduce-overhead"`` needs CUDA).
    :param optimizer_impl: Adam kernels for the three optimizers, see :func:`set_adam_impl`.
    :param inplace_relu: switch the actor's and critics' ReLUs after linear layers to in place
        (:func:`relu_in_place`; the networks' outputs and gradients are unchanged, also outside this update).
    :raises ValueError: with gSDE (``model.use_sde``) or an unknown ``optimizer_impl``.
    """

    def __init__(
        self,
        model: SAC,
        compile: bool = False,
        compile_mode: str = "default",
        optimizer_impl: str = "fused",
        inplace_relu: bool = True,
    ):
        if model.use_sde:
            raise ValueError("FusedSACUpdate does not support gSDE (use_sde=True); use SB3's SAC.train")
        if optimizer_impl not in OPTIMIZER_IMPLS:
            raise ValueError(f"Unknown optimizer impl {optimizer_impl!r}; expected one of {OPTIMIZER_IMPLS}")
        self.model, self.compile, self.compile_mode = model, compile, compile_mode
        self.optimizer_impl = optimizer_impl
        if inplace_relu:
            relu_in_place(model.actor, model.critic, model.critic_target)
        self._sample_fn: Callable[..., tuple[th.Tensor, th.Tensor]] = self._sample
        self._critic_loss_fn: Callable[..., th.Tensor] = self._critic_loss
        self._actor_loss_fn: Callable[..., th.Tensor] = self._actor_loss
        if compile:
            kwargs: dict[str, Any] = dict(mode=compile_mode, dynamic=False)
            self._sample_fn = th.compile(self._sample, **kwargs)
            self._critic_loss_fn = th.compile(self._critic_loss, **kwargs)
            self._actor_loss_fn = th.compile(self._actor_loss, **kwargs)
        self._noise: tuple[th.Tensor, th.Tensor] | None = None
        self._losses: th.Tensor | None = None
        self._impl_set_on: list[list[dict[str, Any]]] = []

    # --------------------------------------------------------------------------------- the three losses
    def _sample(self, obs: th.Tensor, noise: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """SB3's ``actor.action_log_prob(obs)`` with the Gaussian noise given: squashed actions
        ``(batch, action_dim)`` and their log-density ``(batch, 1)`` (SB3's expressions, in its order)."""
        mean, log_std, _ = self.model.actor.get_action_dist_params(obs)
        std = th.ones_like(mean) * log_std.exp()
        gaussian = mean + noise * std
        log_prob = -((gaussian - mean) ** 2) / (2 * std**2) - std.log() - _LOG_SQRT_2PI
        actions = th.tanh(gaussian)
        log_prob = log_prob.sum(dim=1) - th.sum(th.log(1 - actions**2 + _SQUASH_EPSILON), dim=1)
        return actions, log_prob.reshape(-1, 1)

    def _critic_loss(
        self,
        obs: th.Tensor,
        actions: th.Tensor,
        next_obs: th.Tensor,
        rewards: th.Tensor,
        dones: th.Tensor,
        discounts: th.Tensor | float,
        next_noise: th.Tensor,
        ent_coef: th.Tensor,
    ) -> th.Tensor:
        """``0.5 sum_i mean((Q_i(s, a) - y)^2)`` with SAC's soft target ``y`` (no gradient through ``y``)."""
        model = self.model
        with th.no_grad():
            next_actions, next_log_prob = self._sample(next_obs, next_noise)
            next_q = th.cat(model.critic_target(next_obs, next_actions), dim=1)
            next_q, _ = th.min(next_q, dim=1, keepdim=True)
            next_q = next_q - ent_coef * next_log_prob
            target = rewards + (1 - dones) * discounts * next_q
        current = model.critic(obs, actions)
        return 0.5 * sum(F.mse_loss(q, target) for q in current)  # type: ignore[return-value]

    def _actor_loss(
        self, obs: th.Tensor, actions_pi: th.Tensor, log_prob: th.Tensor, ent_coef: th.Tensor
    ) -> th.Tensor:
        """``mean(alpha log pi(a~|s) - min_i Q_i(s, a~))``."""
        q_pi = th.cat(self.model.critic(obs, actions_pi), dim=1)
        min_q, _ = th.min(q_pi, dim=1, keepdim=True)
        return (ent_coef * log_prob - min_q).mean()

    # --------------------------------------------------------------------------------- the loop
    def optimizers(self) -> list[th.optim.Optimizer]:
        """The actor's, the critics' and (with a learned temperature) the temperature's optimizers, in
        ``SAC.train``'s order."""
        model = self.model
        optimizers = [model.actor.optimizer, model.critic.optimizer]
        return optimizers + ([model.ent_coef_optimizer] if model.ent_coef_optimizer is not None else [])

    def _set_optimizer_impl(self) -> None:
        """Set the Adam kernels once per param-group list (loading a checkpoint replaces the groups)."""
        groups = [opt.param_groups for opt in self.optimizers()]
        done = self._impl_set_on
        if len(groups) == len(done) and all(a is b for a, b in zip(groups, done, strict=True)):
            return
        for opt in self.optimizers():
            set_adam_impl(opt, self.optimizer_impl)
        self._impl_set_on = groups

    def __call__(
        self, gradient_steps: int, batch_size: int, sample: Callable[[int], ReplayBufferSamples]
    ) -> dict[str, float]:
        """``gradient_steps`` SAC updates on batches from ``sample(batch_size)``, as ``SAC.train`` makes them.

        The caller sets the training mode and the learning rates (``SAC.train``'s first lines) and counts
        ``_n_updates``. Optimizer step pre-hooks run as usual (before each step).

        :return: the means over the updates of ``critic_loss``, ``actor_loss``, ``ent_coef`` and, with a
            learned temperature, ``ent_coef_loss`` (SB3's logged ``train/*`` values).
        """
        model = self.model
        actor, critic, critic_target = model.actor, model.critic, model.critic_target
        self._set_optimizer_impl()
        learn_alpha = model.ent_coef_optimizer is not None and model.log_ent_coef is not None
        # Parameters of the critics only (a features extractor shared with the actor keeps its gradient).
        critic_params = own_parameters(critic, shared_with=actor)
        target_params, source_params = list(critic_target.parameters()), list(critic.parameters())
        bn_stats, bn_stats_target = model.batch_norm_stats, model.batch_norm_stats_target
        if self._losses is None or self._losses.shape[0] < gradient_steps:
            self._losses = th.zeros(gradient_steps, 4, device=model.device)
        losses = self._losses
        target_entropy = float(model.target_entropy) if learn_alpha else 0.0
        for step in range(gradient_steps):
            data = sample(batch_size)
            discounts = data.discounts if data.discounts is not None else model.gamma
            noise = self._noise_buffer(data.actions)
            # SB3's order of draws: the actor's sample at s, then at s'.
            noise[0].normal_()
            actions_pi, log_prob = self._sample_fn(data.observations, noise[0])
            if learn_alpha:
                log_ent_coef = model.log_ent_coef
                ent_coef = th.exp(log_ent_coef.detach())
                weight = (log_prob.detach() + target_entropy).mean()
                # SB3's loss -(log(alpha) * weight_i).mean() and its gradient in log(alpha), -mean(weight_i).
                th.mul(log_ent_coef.detach().reshape(()), weight, out=losses[step, 3]).neg_()
                log_ent_coef.grad = (-weight).expand_as(log_ent_coef).clone()
                model.ent_coef_optimizer.step()
            else:
                ent_coef = model.ent_coef_tensor
            losses[step, 2] = ent_coef.reshape(())

            noise[1].normal_()
            critic_loss = self._critic_loss_fn(
                data.observations,
                data.actions,
                data.next_observations,
                data.rewards,
                data.dones,
                discounts,
                noise[1],
                ent_coef,
            )
            critic.optimizer.zero_grad()
            critic_loss.backward()
            critic.optimizer.step()

            # The critics' weight gradients of the actor loss are not needed: SB3 computes and zeroes them.
            with frozen(critic_params):
                actor_loss = self._actor_loss_fn(data.observations, actions_pi, log_prob, ent_coef)
                actor.optimizer.zero_grad()
                actor_loss.backward()
            actor.optimizer.step()
            losses[step, 0] = critic_loss.detach()
            losses[step, 1] = actor_loss.detach()

            if step % model.target_update_interval == 0:
                foreach_polyak_update(source_params, target_params, model.tau)
                if bn_stats:
                    with th.no_grad():
                        th._foreach_copy_(bn_stats_target, bn_stats)
        means = losses[:gradient_steps].mean(dim=0).tolist()
        out = {"critic_loss": means[0], "actor_loss": means[1], "ent_coef": means[2]}
        if learn_alpha:
            out["ent_coef_loss"] = means[3]
        return out

    def _noise_buffer(self, like: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Two ``(batch, action_dim)`` tensors, the noise of the samples at ``s`` and ``s'``, reused across
        updates (separate storages: autograd saves the first while the second is drawn)."""
        noise = self._noise
        if noise is None or noise[0].shape != like.shape or noise[0].device != like.device:
            noise = self._noise = (th.empty_like(like), th.empty_like(like))
        return noise
