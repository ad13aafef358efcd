"""The evaluation's config (section ``evaluate`` of params.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check


@dataclass(frozen=True)
class EvalConfig:
    seed: int                    # masks, bootstrap draws and random-weights encoders derive from it
    checkpoint: str              # file in the model folder that is evaluated
    mask_ratios: tuple           # fractions of the 1 s patches hidden
    mask_types: tuple            # random | block
    n_bootstrap: int             # subject-level bootstrap replicates
    ci: float                    # interval coverage, e.g. 0.95
    probe_folds: int             # subject-grouped CV folds on train for the ridge alpha
    probe_alphas: tuple          # ridge alphas tried (features standardised)
    random_encoder_seeds: int    # random-weights encoders probed as a control
    scale_fit_windows: int       # train windows used to fit the scaled beat repeat
    batch_size: int
    device: str                  # auto | cpu | cuda | cuda:N
    figure_windows: int          # val windows drawn in the reconstruction figure

    def __post_init__(self):
        check(len(self.mask_ratios) > 0 and all(0 < r < 1 for r in self.mask_ratios), "evaluate.mask_ratios",
              "need a non-empty list of fractions in (0, 1)")
        check(len(self.mask_types) > 0 and all(t in ("random", "block") for t in self.mask_types),
              "evaluate.mask_types", "need a non-empty list of random / block")
        check(self.n_bootstrap >= 100, "evaluate.n_bootstrap", "must be >= 100 for a percentile interval")
        check(0 < self.ci < 1, "evaluate.ci", "must be in (0, 1)")
        check(self.probe_folds >= 2, "evaluate.probe_folds", "must be >= 2")
        check(len(self.probe_alphas) > 0 and all(a > 0 for a in self.probe_alphas), "evaluate.probe_alphas",
              "need a non-empty list of positive values")
        check(self.random_encoder_seeds >= 1, "evaluate.random_encoder_seeds", "must be >= 1")
        check(self.scale_fit_windows >= 1, "evaluate.scale_fit_windows", "must be >= 1")
        check(self.batch_size >= 1, "evaluate.batch_size", "must be >= 1")
        check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "evaluate.device",
              "must be auto, cpu, cuda or cuda:N")
        check(self.figure_windows >= 1, "evaluate.figure_windows", "must be >= 1")
