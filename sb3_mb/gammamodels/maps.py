"""Density and value maps of a γ-model (spec 1.5; Janner et al. 2020, Fig. 3 and Sec. 5), as arrays, as
matplotlib figures, and through SB3's logger: as figures (:func:`log_maps`) and as a video over training
(:class:`MapVideoCallback`).

Generic functions take states and queries in observation units; the Pendulum helpers build the release's
grids: 3 × 3 conditioning states (θ ∈ {π/2, π, 3π/2} × θ̇ ∈ {−4, 0, 4}, θ = 0 upright) and a 41 × 41 query
grid (θ ∈ [0, 2π] along x, θ̇ from +8 down to −8 along y), Pendulum-v1's observation being
``(cos θ, sin θ, θ̇)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from sb3_mb.gammamodels.gamma_model import GammaModel, PolicyFn, policy_function

__all__ = [
    "MapVideoCallback",
    "density_map",
    "figure_frame",
    "log_maps",
    "pendulum_grid",
    "pendulum_monte_carlo_values",
    "pendulum_obs",
    "pendulum_panel_states",
    "plot_density_maps",
    "plot_value_map",
    "value_map",
]


@th.no_grad()
def density_map(model: GammaModel, policy: PolicyFn, states: th.Tensor, queries: th.Tensor) -> th.Tensor:
    """``μ(q | s, π(s))`` for every conditioning state and query: ``states (P, d)``, ``queries (Q, d)`` →
    ``(P, Q)`` densities (per unit of state volume)."""
    policy = policy_function(policy)
    actions = policy(states)
    log_prob = model.log_prob(queries[None], states[:, None], actions[:, None])
    return log_prob.exp()


@th.no_grad()
def value_map(
    model: GammaModel,
    policy: PolicyFn,
    states: th.Tensor,
    reward_fn: Callable[[th.Tensor], th.Tensor],
    n_samples: int = 256,
) -> th.Tensor:
    """``V(s) = E_{s_e ~ μ(· | s, π(s))}[r(s_e)] / (1 - γ)`` for ``states (P, d)`` → ``(P,)`` in reward units
    (:meth:`GammaModel.value`; the release's map is an unnormalised Riemann sum over its query grid instead,
    equal up to a constant)."""
    policy = policy_function(policy)
    return model.value(states, policy(states), reward_fn, n_samples)


def pendulum_obs(theta: th.Tensor, theta_dot: th.Tensor) -> th.Tensor:
    """Pendulum-v1 observations ``(..., 3)`` = ``(cos θ, sin θ, θ̇)`` from angles (rad, 0 upright) and
    angular velocities (rad/s)."""
    return th.stack([th.cos(theta), th.sin(theta), theta_dot], dim=-1)


def pendulum_panel_states() -> th.Tensor:
    """The release's 3 × 3 conditioning states, ``(9, 3)``, row-major over θ̇ ∈ {−4, 0, 4} × θ."""
    theta = th.tensor([np.pi / 2, np.pi, 3 * np.pi / 2])
    theta_dot = th.tensor([-4.0, 0.0, 4.0])
    t, v = th.meshgrid(theta, theta_dot, indexing="xy")
    return pendulum_obs(t.reshape(-1).float(), v.reshape(-1).float())


def pendulum_grid(n: int = 41) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """The query grid: ``(theta (n,), theta_dot (n,), obs (n * n, 3))``, θ̇ descending (row 0 is +8), θ along
    columns, row-major."""
    theta = th.linspace(0, 2 * np.pi, n)
    theta_dot = th.linspace(8.0, -8.0, n)
    v, t = th.meshgrid(theta_dot, theta, indexing="ij")
    return theta, theta_dot, pendulum_obs(t.reshape(-1), v.reshape(-1))


def pendulum_state_reward(obs: th.Tensor) -> th.Tensor:
    """The release's map reward ``-(θ² + 0.1 θ̇²)`` (θ wrapped to ``[-π, π)``, action cost left out)."""
    theta = th.atan2(obs[..., 1], obs[..., 0])
    return -(theta.pow(2) + 0.1 * obs[..., 2].pow(2))


def pendulum_monte_carlo_values(
    policy: PolicyFn, states: th.Tensor, gamma: float, horizon: int | None = None
) -> th.Tensor:
    """Monte Carlo counterpart of :func:`value_map` on Pendulum-v1: from each state ``(P, 3)``, one rollout of
    the deterministic ``policy`` in the real env (deterministic dynamics), ``sum_{Δ>=1} γ^(Δ-1) r(s_{t+Δ})``
    with :func:`pendulum_state_reward`, truncated at ``horizon`` steps (default: where ``γ^H < 1e-3``).

    :return: ``(P,)`` in reward units.
    """
    import gymnasium

    policy = policy_function(policy)
    horizon = horizon or int(np.ceil(np.log(1e-3) / np.log(gamma)))
    env = gymnasium.make("Pendulum-v1").unwrapped
    env.reset(seed=0)
    values = []
    for obs in states:
        env.state = np.array([float(th.atan2(obs[1], obs[0])), float(obs[2])])
        current, total = obs.float(), 0.0
        for k in range(horizon):
            action = policy(current[None])[0].cpu().numpy()
            next_obs, _, _, _, _ = env.step(2.0 * np.clip(action, -1, 1))  # [-1, 1] -> torque in [-2, 2]
            current = th.as_tensor(next_obs, dtype=th.float32)
            total += gamma**k * float(pendulum_state_reward(current))
        values.append(total)
    env.close()
    return th.tensor(values)


def plot_density_maps(model: GammaModel, policy: PolicyFn, n: int = 41):
    """The release's 3 × 3 panel figure of ``μ(· | s, π(s))`` on Pendulum (module docstring); returns a
    matplotlib ``Figure`` (the white dot is the conditioning state, titles give the state and the peak)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    states = pendulum_panel_states()
    _, _, queries = pendulum_grid(n)
    densities = density_map(model, policy, states, queries).reshape(9, n, n).cpu().numpy()
    fig, axes = plt.subplots(3, 3, figsize=(9, 9))
    extent = (0, 2 * np.pi, -8, 8)
    for k, ax in enumerate(axes.flat):
        ax.imshow(densities[k], extent=extent, aspect="auto")
        theta = float(th.atan2(states[k, 1], states[k, 0])) % (2 * np.pi)
        ax.plot([theta], [float(states[k, 2])], "o", color="white")
        ax.set_title(f"θ={theta:.2f}, θ̇={float(states[k, 2]):.0f}, max {densities[k].max():.2g}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_value_map(model: GammaModel, policy: PolicyFn, n: int = 20, n_samples: int = 64):
    """The value map on Pendulum's grid (``n × n`` states, θ along x, θ̇ from +8 at the top), with
    :func:`pendulum_state_reward`; returns a matplotlib ``Figure``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, _, states = pendulum_grid(n)
    values = value_map(model, policy, states, pendulum_state_reward, n_samples).reshape(n, n).cpu().numpy()
    fig, ax = plt.subplots(figsize=(4, 4))
    image = ax.imshow(values, extent=(0, 2 * np.pi, -8, 8), aspect="auto")
    fig.colorbar(image, ax=ax)
    ax.set_xlabel("θ")
    ax.set_ylabel("θ̇")
    fig.tight_layout()
    return fig


def log_maps(logger, model: GammaModel, policy: PolicyFn, step: int) -> None:
    """Record the Pendulum density and value figures through SB3's logger (``gamma_model/density_map``,
    ``gamma_model/value_map``; TensorBoard shows them) and dump at ``step``."""
    from stable_baselines3.common.logger import Figure

    exclude = ("stdout", "log", "json", "csv")
    logger.record(
        "gamma_model/density_map", Figure(plot_density_maps(model, policy), close=True), exclude=exclude
    )
    logger.record("gamma_model/value_map", Figure(plot_value_map(model, policy), close=True), exclude=exclude)
    logger.dump(step)


def figure_frame(fig) -> np.ndarray:
    """A matplotlib figure drawn to an RGB frame ``(H, W, 3)`` uint8 (pixels of its size × dpi); the figure is
    closed."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    frame = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return frame


class MapVideoCallback(BaseCallback):
    """The density (or value) map of a γ-model on Pendulum as a video over training, through SB3's logger.

    Every ``every`` env steps (and at the end of training) the map of the model as it is then
    (:func:`plot_density_maps`: the 3 × 3 panels; or :func:`plot_value_map`) becomes one frame, and all frames
    so far are recorded as one :class:`~stable_baselines3.common.logger.Video` ``(1, T, 3, H, W)`` uint8 under
    ``gamma_model/density_video`` (``gamma_model/value_video``), then the logger is dumped at the step
    (TensorBoard shows the video; the text formats leave it out). ``frames`` keeps the ``(H, W, 3)`` frames
    and ``frame_steps`` their env steps. The release shows the maps as figures only; the video is the issue's.

    :param every: env steps between frames (``num_timesteps`` multiples).
    :param kind: ``"density"`` or ``"value"``.
    :param gamma_model: the γ-model (default: the algorithm's ``gamma_model``, as :class:`GammaMVE` has).
    :param policy: the policy whose maps they are (default: the algorithm's ``policy``, deterministic).
    :param n: query-grid side (density: ``n × n`` queries per panel; value: ``n × n`` states).
    :param fps: frames per second of the video.
    :param dpi: figure resolution (frame size: the figure's inches × dpi).
    :raises ValueError: for ``every < 1`` or an unknown ``kind``; at training start if there is no γ-model.
    """

    def __init__(
        self,
        every: int = 1000,
        kind: str = "density",
        gamma_model: GammaModel | None = None,
        policy: PolicyFn | None = None,
        n: int = 41,
        fps: float = 2.0,
        dpi: int = 40,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        if every < 1 or kind not in ("density", "value"):
            raise ValueError(f"need every >= 1 and kind 'density' or 'value'; got {every}, {kind!r}")
        self.every, self.kind, self.gamma_model, self.map_policy = every, kind, gamma_model, policy
        self.n, self.fps, self.dpi = n, fps, dpi
        self.frames: list[np.ndarray] = []
        self.frame_steps: list[int] = []

    def _on_training_start(self) -> None:
        if self.gamma_model is None:
            self.gamma_model = getattr(self.model, "gamma_model", None)
        if not isinstance(self.gamma_model, GammaModel):
            raise ValueError("MapVideoCallback needs a GammaModel: pass gamma_model or train a GammaMVE")
        if self.map_policy is None:
            self.map_policy = self.model.policy

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            self.add_frame()
        return True

    def _on_training_end(self) -> None:
        if not self.frame_steps or self.frame_steps[-1] != self.num_timesteps:
            self.add_frame()

    def add_frame(self) -> None:
        """Draw the map now, append it to ``frames`` and record the video of all frames."""
        from stable_baselines3.common.logger import Video

        if self.kind == "density":
            fig = plot_density_maps(self.gamma_model, self.map_policy, self.n)
        else:
            fig = plot_value_map(self.gamma_model, self.map_policy, self.n)
        fig.set_dpi(self.dpi)
        fig.suptitle(f"step {self.num_timesteps}", fontsize=8)
        self.frames.append(figure_frame(fig))
        self.frame_steps.append(self.num_timesteps)
        video = th.from_numpy(np.stack(self.frames)).permute(0, 3, 1, 2)[None]  # (1, T, 3, H, W)
        exclude = ("stdout", "log", "json", "csv")
        self.logger.record(f"gamma_model/{self.kind}_video", Video(video, fps=self.fps), exclude=exclude)
        self.logger.dump(self.num_timesteps)
