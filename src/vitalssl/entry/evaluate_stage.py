"""The `evaluate` stage: params -> :class:`EvalConfig` -> evaluation of the pretrained model -> metrics and figures."""

from __future__ import annotations

from pathlib import Path

from ..atomic import write_json
from ..config import from_dict
from ..eval.config import EvalConfig
from ..eval.figures import plot_probes, plot_reconstructions
from ..eval.reconstruction import mask_key
from ..eval.run import FIGURE_SETTING, evaluate_checkpoint
from .params import section


def eval_config(params: dict) -> EvalConfig:
    return from_dict(EvalConfig, section(params, "evaluate"), "evaluate")


# every number is reported on both; the choices made before (best checkpoint by val loss, probe penalties by
# subject-grouped CV on train) never see test
EVAL_SPLITS = ("val", "test")


def run_evaluate(cfg: EvalConfig, model_dir: Path, windows_dir: Path, metrics_path: Path,
                 reconstruction_png: Path, probes_png: Path, *, progress: bool = True, log=print) -> dict:
    """Evaluate ``model_dir / cfg.checkpoint``; write the metrics JSON and the two figures (of val)."""
    res = evaluate_checkpoint(cfg, Path(model_dir) / cfg.checkpoint, Path(windows_dir),
                              EVAL_SPLITS, progress=progress, log=log)
    m = res["metrics"]
    for path in (metrics_path, reconstruction_png, probes_png):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(metrics_path), m)
    plot_reconstructions(res["figure"], mask_key(*FIGURE_SETTING) if FIGURE_SETTING in
                         [(k, r) for k in cfg.mask_types for r in cfg.mask_ratios] else "", reconstruction_png)
    plot_probes(m["val"]["probes"], "val", probes_png, cfg.ci)
    log(summary_lines(m))
    return res


def summary_lines(m: dict) -> str:
    """The headline numbers on the console: model vs the best baseline per setting, and the probes' R²."""
    lines = []
    for split in ("val", "test"):
        if split not in m:
            continue
        for key, e in m[split]["reconstruction"].items():
            d = e["model_minus_best"]["all"]
            lines.append(f"{split} {key}: model MSE {e['model']['all']:.3f} vs {e['best_baseline']['all']} "
                         f"{e[e['best_baseline']['all']]['all']:.3f} (difference {d['value']:+.3f}, "
                         f"CI [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}])")
        for label, p in m[split]["probes"].items():
            if "skipped" in p:
                lines.append(f"{split} probe {label}: skipped ({p['skipped']})")
                continue
            lines.append(f"{split} probe {label}: R² pretrained {p['pretrained_mean']['r2']['value']:.3f}, "
                         f"random {p['random_mean']['r2']['value']:.3f}, hand {p['hand']['r2']['value']:.3f}")
    return "\n".join(lines)
