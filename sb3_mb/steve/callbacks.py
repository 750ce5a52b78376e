"""STEVE's evaluation log: the ``log/<EXP>.greedy.csv`` format of the released code of Buckman et al. 2018
(arXiv:1807.01675), from which the paper's learning curves (Sec. 4) are drawn.

One line per finished greedy evaluation episode, no header, ``"%2f,%d,%d,%2f"`` = hours of training wall
time, epoch (value updates // 500, the original's checkpoint counter), env frames, episode return. The
original's two evaluator processes reload the policy after each episode; here :class:`GreedyCSVCallback`
runs ``n_eval_episodes`` greedy episodes every ``eval_freq`` env steps with the current policy.
"""

from __future__ import annotations

import os
import time

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

__all__ = ["GreedyCSVCallback", "greedy_csv_line"]


def greedy_csv_line(hours: float, epoch: int, frames: int, episode_return: float) -> str:
    """One line of ``<EXP>.greedy.csv``: ``"%2f,%d,%d,%2f"`` (the released code's), with the newline."""
    return "%2f,%d,%d,%2f\n" % (hours, epoch, frames, episode_return)  # noqa: UP031 (the original's format)


class GreedyCSVCallback(BaseCallback):
    """Every ``eval_freq`` env steps, append one ``greedy.csv`` line per greedy evaluation episode.

    :param eval_env: evaluation env (a ``VecEnv`` with one env, or a Gymnasium env).
    :param path: the csv file (created with its folder; appended to).
    :param eval_freq: env steps (``num_timesteps``) between evaluations.
    :param n_eval_episodes: episodes per evaluation (the original: two evaluators, one episode each).
    :param epoch_every: value updates per epoch (the original's ``epoch_every_n``: 500).
    """

    def __init__(
        self,
        eval_env: VecEnv,
        path: str,
        eval_freq: int = 1000,
        n_eval_episodes: int = 2,
        epoch_every: int = 500,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        self.eval_env, self.path = eval_env, path
        self.eval_freq, self.n_eval_episodes, self.epoch_every = eval_freq, n_eval_episodes, epoch_every
        self._start = time.perf_counter()
        self._last_eval = 0

    def _on_training_start(self) -> None:
        self._start = time.perf_counter()
        self._last_eval = self.num_timesteps
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last_eval < self.eval_freq:
            return True
        self._last_eval = self.num_timesteps
        hours = (time.perf_counter() - self._start) / 3600.0
        epoch = getattr(self.model, "_n_updates", 0) // self.epoch_every
        returns, _ = evaluate_policy(
            self.model,
            self.eval_env,
            n_eval_episodes=self.n_eval_episodes,
            deterministic=True,
            return_episode_rewards=True,
        )
        with open(self.path, "a") as file:
            for episode_return in returns:
                file.write(greedy_csv_line(hours, epoch, self.num_timesteps, float(episode_return)))
        return True
