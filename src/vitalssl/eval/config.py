"""The evaluation's config (section ``evaluate`` of params.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check

RULES = ("below", "above", "at_least", "equals")


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
    tasks: dict                  # task name -> {label, level, kind[, rule]} (see vitalssl.eval.tasks)
    min_positives: int           # a binary task needs this many positive (and negative) windows or cases per split
    min_positive_subjects: int   # ... spread over at least this many subjects

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
        check(self.min_positives >= 1, "evaluate.min_positives", "must be >= 1")
        check(self.min_positive_subjects >= 2, "evaluate.min_positive_subjects", "must be >= 2")
        for name, t in self.tasks.items():
            check_task(name, t)



def check_task(name: str, t) -> None:
    """One ``evaluate.tasks`` entry: label, level (window | case), kind (regression | binary), rule for binary."""
    where = f"evaluate.tasks.{name}"
    check(isinstance(t, dict), where, "must be a mapping of label, level, kind (and rule for binary)")
    allowed = {"label", "level", "kind"} | ({"rule"} if t.get("kind") == "binary" else set())
    check(set(t) == allowed, where, f"needs exactly the keys {', '.join(sorted(allowed))}, got {', '.join(map(str, t))}")
    check(isinstance(t["label"], str) and t["label"] != "", f"{where}.label", f"must be a column name, got "
          f"{t['label']!r}" + (" (YAML reads a bare yes, no, on, off, true or false as a boolean: quote it)"
                               if isinstance(t["label"], bool) else ""))
    check(t["level"] in ("window", "case"), f"{where}.level", "must be window or case")
    check(t["kind"] in ("regression", "binary"), f"{where}.kind", "must be regression or binary")
    if t["kind"] == "binary":
        r = t["rule"]
        check(isinstance(r, dict) and len(r) == 1 and next(iter(r)) in RULES, f"{where}.rule",
              f"must be one of {', '.join(f'{k}: <value>' for k in RULES)}")
        k, v = next(iter(r.items()))
        bool_hint = (": YAML reads a bare yes, no, on, off, true or false as a boolean; quote the text the "
                     "column holds ('yes', or 'True' for a column of True/False)" if isinstance(v, bool) else "")
        check(k == "equals" or (isinstance(v, (int, float)) and not isinstance(v, bool)), f"{where}.rule.{k}",
              f"must be a number, got {v!r}" + (" (YAML reads a bare yes, no, on, off, true or false as a boolean)"
                                                 if isinstance(v, bool) else " (YAML reads 5e-1 as text: write "
                                                 "5.0e-1, or the number unquoted)" if isinstance(v, str) else ""))
        check(not isinstance(v, bool) and isinstance(v, (str, int, float)), f"{where}.rule.{k}",
              f"must be a text or a number, got {v!r}" + bool_hint)


@dataclass(frozen=True)
class LabelEfficiencyConfig:
    """The label-efficiency runs (section ``label_efficiency``; see :mod:`vitalssl.eval.labelefficiency`)."""
    tasks: tuple                 # names of evaluate.tasks entries
    fractions: tuple             # fractions of the train subjects, nested
    seed: int
    draws: int                   # draws per cell: each its own subject shuffle and network seeds
    batch_size: int              # windows per step of the trained networks
    max_steps: int               # AdamW steps at most per network
    eval_every: int              # steps between val-loss checks (early stopping)
    patience: int                # checks without a better val loss before stopping
    finetune_from_probe: bool    # the fine-tuned head starts as the frozen-encoder linear probe (LP-FT)
    lr_finetune: float           # learning rate when the pretrained encoder is fine-tuned
    lr_scratch: float            # learning rate of the same network from random weights
    weight_decay: float

    def __post_init__(self):
        check(len(self.tasks) > 0 and len(set(self.tasks)) == len(self.tasks), "label_efficiency.tasks",
              "need a non-empty list of distinct evaluate.tasks names")
        check(len(self.fractions) > 0 and all(0 < f <= 1 for f in self.fractions)
              and len(set(self.fractions)) == len(self.fractions), "label_efficiency.fractions",
              "need distinct fractions in (0, 1]")
        for key in ("draws", "batch_size", "max_steps", "eval_every", "patience"):
            check(getattr(self, key) >= 1, f"label_efficiency.{key}", "must be >= 1")
        check(self.lr_finetune > 0 and self.lr_scratch > 0, "label_efficiency.lr_finetune / lr_scratch",
              "must be > 0")
        check(self.weight_decay >= 0, "label_efficiency.weight_decay", "must be >= 0")

    def check_tasks(self, tasks: dict) -> None:
        """Every name must be an ``evaluate.tasks`` entry."""
        for t in self.tasks:
            check(t in tasks, "label_efficiency.tasks", f"{t!r} is not an evaluate.tasks entry "
                                                         f"(known: {', '.join(sorted(tasks))})")
