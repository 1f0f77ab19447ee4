"""A TPE sampler whose randomness is a function of (study seed, trial number): deterministic for one worker, and
different for every trial when many workers share a study.

One seeded TPESampler per process is deterministic alone, but workers started together with the same seed draw
the same "random" startup trials (the seed cannot depend on the number of trials already there: they all see
the same number). Trial numbers, by contrast, are unique across workers, because the storage assigns them. TPE
keeps no state between trials besides its random generator, so building a fresh TPESampler seeded from
(seed, trial number) for each trial gives: the same study history and seed -> the same parameters (a single
worker, or a resumed study, is reproducible), and two trials -> two independent draws (no duplicates between
workers). `constant_liar` makes TPE treat other workers' running trials as bad results, steering them apart.

The per-trial sampler is made in `before_trial`, which Optuna calls from `Trial.__init__`, once the trial's
number is known and before any sampling: relative sampling (multivariate TPE, on the first `suggest_*`) and
independent sampling both happen later, inside the objective, so both use the trial's own seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

TPE_STARTUP_TRIALS = 15


def trial_seed(seed: int, number: int) -> int:
    """A 32-bit seed for trial `number` of a study seeded `seed` (stable across Python and NumPy versions)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:4], "little")


class TrialSeededTPESampler(BaseSampler):
    """Multivariate TPE (constant liar, 15 random startup trials) seeded per trial from (seed, trial number)."""

    def __init__(self, seed: int, n_startup_trials: int = TPE_STARTUP_TRIALS) -> None:
        self.seed = seed
        self.n_startup_trials = n_startup_trials
        self._running: dict[int, TPESampler] = {}  # trial number -> its sampler, while the trial runs here

    def sampler_for(self, trial: FrozenTrial) -> TPESampler:
        if trial.number not in self._running:
            self._running[trial.number] = TPESampler(seed=trial_seed(self.seed, trial.number), multivariate=True,
                                                     constant_liar=True, n_startup_trials=self.n_startup_trials)
        return self._running[trial.number]

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._running.pop(trial.number, None)  # a fresh generator, even if this number was seen before
        self.sampler_for(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.sampler_for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict:
        return self.sampler_for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution):
        return self.sampler_for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.sampler_for(trial).after_trial(study, trial, state, values)
        self._running.pop(trial.number, None)

    def reseed_rng(self) -> None:
        """Nothing to do: every trial already draws from its own seed (Optuna calls this for n_jobs > 1)."""
