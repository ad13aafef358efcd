"""The model card of an exported encoder, and the generated result tables of the README and docs/results.md.

Every number in these tables is read from the metrics (``metrics/evaluate.json``,
``metrics/label_efficiency.json``), so a test can check the documents against the files they were written from.
"""

from __future__ import annotations

import math

RECON_SETTING = "random_r40"


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"


def report_split(metrics: dict) -> str:
    """The split the card reports: ``test`` when it was evaluated, else ``val`` (and the card says so)."""
    return "test" if "test" in metrics else "val"


def reconstruction_rows(metrics: dict) -> list[tuple]:
    """``(setting, channel, model MSE, best baseline, baseline MSE, difference, ci_low, ci_high)`` rows."""
    split = report_split(metrics)
    rows = []
    for key, e in metrics[split]["reconstruction"].items():
        for ch in ("ppg", "ecg", "all"):
            best = e["best_baseline"][ch]
            d = e["model_minus_best"][ch]
            rows.append((key, ch, e["model"][ch], best, e[best][ch], d["value"], d["ci_low"], d["ci_high"]))
    return rows


def task_rows(metrics: dict) -> list[tuple]:
    """``(task, method, score name, value, ci_low, ci_high)`` rows of the report split's tasks.

    Reads ``tasks`` (one entry per task, scored per method) when the evaluation has it, else the
    regression ``probes``; a skipped task gives one row whose method is ``skipped`` and value its reason.
    """
    split = report_split(metrics)
    block = metrics[split].get("tasks", metrics[split].get("probes", {}))
    rows = []
    for task, entry in block.items():
        if "skipped" in entry:
            rows.append((task, "skipped", entry["skipped"], None, None, None))
            continue
        for method, res in entry.items():
            if not isinstance(res, dict):
                continue
            for score in ("r2", "mae", "auroc", "auprc"):
                if score in res and isinstance(res[score], dict):
                    s = res[score]
                    rows.append((task, method, score, s["value"], s.get("ci_low"), s.get("ci_high")))
    return rows


def evaluation_tables(metrics: dict, level: str = "###") -> list[str]:
    """The reconstruction and task tables of the report split, as Markdown lines (headings at ``level``)."""
    lines = [f"{level} Masked reconstruction (MSE on hidden samples, z-scored units)", "",
             "| setting | channel | model | best baseline | baseline | model - baseline | interval |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {k} | {ch} | {_fmt(m)} | {b} | {_fmt(bm)} | {_fmt(d)} | [{_fmt(lo)}, {_fmt(hi)}] |"
              for k, ch, m, b, bm, d, lo, hi in reconstruction_rows(metrics)]
    lines += ["", f"{level} Downstream tasks (linear probes on frozen embeddings, and baselines)", "",
              "| task | method | score | value | interval |", "|---|---|---|---|---|"]
    for task, method, score, v, lo, hi in task_rows(metrics):
        if method == "skipped":
            lines.append(f"| {task} | skipped | {score} | | |")
        else:
            lines.append(f"| {task} | {method} | {score} | {_fmt(v)} | [{_fmt(lo)}, {_fmt(hi)}] |")
    return lines


HEADLINE_METHODS = (("pretrained, mean-pooled", "pretrained_mean"), ("pretrained, per channel", "pretrained_channels"),
                    ("random weights, mean-pooled", "random_mean"), ("beat features", "beat"),
                    ("hand features", "hand"))


def _with_ci(e: dict | None, digits: int = 3) -> str:
    if not e or e.get("value") is None:
        return "n/a"
    ci = f" [{e['ci_low']:.2f}, {e['ci_high']:.2f}]" if e.get("ci_low") is not None else ""
    return f"{e['value']:.{digits}f}{ci}"


def headline_tables(metrics: dict) -> list[str]:
    """The README's small tables: reconstruction at the pretraining setting, and one score per scored task
    for the pretrained encoder against random weights and the classical features."""
    split = report_split(metrics)
    m = metrics[split]
    e = m["reconstruction"][RECON_SETTING]
    lines = [f"Masked reconstruction, {split} split ({m['windows']} windows, {m['subjects']} subjects), random 40% "
             "masks; MSE on hidden samples of z-scored windows, model − best non-learned baseline:", "",
             "| channel | model | best baseline | model − baseline [95% CI] |", "|---|---|---|---|"]
    for ch in ("ppg", "ecg", "all"):
        b = e["best_baseline"][ch]
        lines.append(f"| {ch} | {e['model'][ch]:.3f} | {b} {e[b][ch]:.3f} | "
                     f"{_with_ci(e['model_minus_best'][ch])} |")
    lines += ["", f"Linear probes on frozen embeddings, {split} split (R² for regression, out of sample: against the "
              "train mean; AUROC for binary tasks; 95% subject-bootstrap intervals):", "",
              "| task | score | " + " | ".join(h for h, _ in HEADLINE_METHODS) + " |",
              "|---|---|" + "---|" * len(HEADLINE_METHODS)]
    skipped = []
    for task, entry in m.get("tasks", {}).items():
        if "skipped" in entry:
            skipped.append(task)
            continue
        score = "auroc" if entry.get("kind") == "binary" else "r2"
        cells = [_with_ci((entry.get(k) or {}).get(score)) for _, k in HEADLINE_METHODS]
        lines.append(f"| {task} | {'AUROC' if score == 'auroc' else 'R²'} | " + " | ".join(cells) + " |")
    if skipped:
        lines += ["", f"Skipped on this data, each with its reason in the metrics: {', '.join(skipped)}."]
    return lines


EFFICIENCY_METHODS = (("pretrained, frozen + linear", "frozen_linear"), ("pretrained, fine-tuned", "finetune"),
                      ("same network from scratch", "scratch"), ("beat features + linear", "beat_linear"))


def span(v) -> str:
    """A count, or per-draw counts as one number where they agree and ``low-high`` where they do not."""
    v = [v] if isinstance(v, int) else v
    return f"{min(v)}" if min(v) == max(v) else f"{min(v)}-{max(v)}"


def _at_start(best_step) -> str:
    """† where a network's best val loss was at step 0; over draws, † k/n where k of the n were."""
    if best_step is None or isinstance(best_step, int):
        return " †" if best_step == 0 else ""
    k = sum(b == 0 for b in best_step)
    return "" if k == 0 else " †" if k == len(best_step) else f" † {k}/{len(best_step)}"


def efficiency_table(le: dict) -> list[str]:
    """The label-efficiency table: per task and fraction of train subjects, each method's test metric."""
    if "budget" not in le:
        raise ValueError("the label-efficiency metrics have no `budget` entry (written before the stage recorded "
                         "it): re-run `dvc repro label-efficiency`")
    b = le["budget"]
    start = ("the fine-tuned head starting as a per-window linear probe on the frozen encoder (LP-FT), "
             if b["finetune_from_probe"] else "")
    lines = ["Label efficiency, test split (MAE for regression, lower is better; AUROC for binary; 95% "
             f"subject-bootstrap intervals; the trained networks: {start}at most {b['max_steps']} steps of "
             f"{b['batch_size']} windows, early stopping on val loss checked every {b['eval_every']} steps "
             f"with patience {b['patience']}; † a network whose best val loss was at step 0: fine-tuned, "
             "the head probe on the unchanged encoder; from scratch, its random weights"
             + ("; each cell one draw of the train subjects and network seeds):" if b["draws"] == 1 else
                f"; each cell the mean of {b['draws']} draws, each its own shuffle of the train subjects and "
                "network seeds, with the interval spanning the draws' intervals; † k/n: k of n draws):"), "",
             "| task | metric | train subjects | " + " | ".join(h for h, _ in EFFICIENCY_METHODS) + " |",
             "|---|---|---|" + "---|" * len(EFFICIENCY_METHODS)]
    for task, r in le["tasks"].items():
        for f in le["fractions"]:
            e = r[f"{round(f * 100):g}pct"]
            pct = f"{f * 100:g}%"
            if "skipped" in e:
                lines.append(f"| {task} | {r['metric'].upper()} | {pct} | skipped: {e['skipped']} |"
                             + " |" * (len(EFFICIENCY_METHODS) - 1))
                continue
            cells = [_with_ci(e[k][r["metric"]], 2 if r["metric"] == "mae" else 3) + _at_start(e[k].get("best_step"))
                     for _, k in EFFICIENCY_METHODS]
            few = f"; {e['draws']} of {b['draws']} draws" if e.get("draws", 1) < b["draws"] else ""
            lines.append(f"| {task} | {r['metric'].upper()} | {pct} ({span(e['subjects'])}{few}) | "
                         + " | ".join(cells) + " |")
    return lines


EFF_BEGIN, EFF_END = "<!-- label efficiency from metrics/label_efficiency.json: begin -->", \
    "<!-- label efficiency from metrics/label_efficiency.json: end -->"


README_BEGIN, README_END = "<!-- headline from metrics/evaluate.json: begin -->", \
    "<!-- headline from metrics/evaluate.json: end -->"


BEGIN, END = "<!-- tables from metrics/evaluate.json: begin -->", "<!-- tables from metrics/evaluate.json: end -->"


def refresh_doc(path, metrics: dict, efficiency: dict | None = None) -> str:
    """``path``'s text with its generated blocks rendered: from ``metrics`` the full tables between
    :data:`BEGIN` and :data:`END` and the headline between :data:`README_BEGIN` and :data:`README_END`; from
    ``efficiency`` (the label-efficiency metrics) the table between :data:`EFF_BEGIN` and :data:`EFF_END`."""
    from pathlib import Path
    text = Path(path).read_text()
    if EFF_BEGIN in text and efficiency is None:
        raise ValueError(f"{path} has a label-efficiency block but no label-efficiency metrics were given "
                         f"(run `dvc repro label-efficiency`)")
    blocks = [(b, e, lines) for b, e, lines in ((BEGIN, END, lambda: evaluation_tables(metrics, "##")),
                                                (README_BEGIN, README_END, lambda: headline_tables(metrics)),
                                                (EFF_BEGIN, EFF_END, lambda: efficiency_table(efficiency)))
              if b in text]
    if not blocks:
        raise ValueError(f"{path}: no {BEGIN!r}, {README_BEGIN!r} or {EFF_BEGIN!r} block to fill")
    for begin, end, lines in blocks:
        if end not in text:
            raise ValueError(f"{path}: {begin!r} has no {end!r}")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + begin + "\n" + "\n".join(lines()) + "\n" + end + tail
    return text


def render_card(metrics: dict, export_doc: dict, data_summary: dict, ci: float) -> str:
    """The card as Markdown. ``data_summary``: windows and subjects per split (from the window sidecars)."""
    split = report_split(metrics)
    pre, cfg, ck = export_doc["preprocessing"], export_doc["model_config"], export_doc["checkpoint"]
    lines = [
        "---", "library_name: granite-tsfm", "tags: [time-series, biosignals, ppg, ecg, vitaldb, self-supervised]",
        "---", "",
        "# vitalssl TinyTimeMixer encoder (PPG + ECG, masked signal modeling)", "",
        "A TinyTimeMixer encoder pretrained by masked signal modeling on 10-s PPG + ECG windows from VitalDB-format "
        "intraoperative recordings. Load it with granite-tsfm alone:", "",
        "```python",
        "from tsfm_public.models.tinytimemixer import TinyTimeMixerModel",
        "enc = TinyTimeMixerModel.from_pretrained(\"<this folder>\").eval()",
        "z = enc(past_values=x.transpose(1, 2)).last_hidden_state  # x [B, C, L] -> z [B, C, N_p, D]",
        "```", "",
        "## Input contract", "",
        f"- Channels, in order: {', '.join(pre['channels'])} (tracks {pre['source_tracks']['PPG']}, "
        f"{pre['source_tracks']['ECG']}).",
        f"- {pre['window_s']:g} s windows of {pre['window_samples']} samples at {pre['sampling_rate_hz']:g} Hz, "
        f"resampled from {pre['native_sampling_rate_hz']:g} Hz ({pre['resampling']}).",
        f"- Zero-phase {pre['band_pass']['type']} band-pass of order {pre['band_pass']['order']}: PPG "
        f"{pre['band_pass']['PPG_hz']} Hz, ECG {pre['band_pass']['ECG_hz']} Hz.",
        f"- {pre['normalisation']}; layout {pre['layout']}, {pre['dtype']}.",
        "- The full contract, and the decoder's shape, are in `vitalssl.json`.", "",
        "## Training data and recipe", "",
    ]
    lines += [f"- {s}: {d['windows']} windows from {d['subjects']} subjects" for s, d in data_summary.items()]
    lines += [
        f"- Checkpoint `{ck['file']}` (epoch {ck['epoch'] + 1}, chosen by validation loss {_fmt(ck['best_val_loss'])}); "
        f"sha256 {ck['sha256'][:16]}...",
        f"- Model: d_model {cfg['d_model']}, {cfg['num_layers']} layers, patch {cfg['patch_length']}, "
        f"mode {cfg['mode']}, scaling {cfg['scaling']}.", "",
        f"## Evaluation ({split} split, {int(round(ci * 100))}% subject-bootstrap intervals)", "",
        f"Reported on the {split} split; no choice of checkpoint, recipe or probe penalty used it."
        if split == "test" else
        "Only the val split was evaluated, and val also chose the checkpoint: these numbers are optimistic.", "",
    ]
    lines += evaluation_tables(metrics, "###")
    lines += ["", "## Intended use and limits", "",
              "- Research use: a starting point for fine-tuning or probing on perioperative PPG/ECG. "
              "Not a medical device; no output of it is a clinical measurement.",
              "- Trained on the windows the project's quality gate kept: expect worse latents on signals it "
              "rejects (clipped, flat, disconnected, heavy motion).",
              "- Windows must follow the input contract above (rate, channel order, band-pass, per-window z-score).",
              "- The numbers above come from the data named in this card; on the built-in synthetic demo they "
              "show the pipeline works, not clinical validity.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m vitalssl.eval.modelcard README.md docs/results.md``: refresh their generated tables."""
    import argparse
    import json
    import sys
    from pathlib import Path

    from ..atomic import atomic_write_text
    ap = argparse.ArgumentParser(prog="python -m vitalssl.eval.modelcard",
                                 description="Refresh the tables generated from the evaluation's metrics in "
                                             "Markdown files (between their begin/end markers).")
    ap.add_argument("docs", nargs="+", type=Path, help="Markdown files, e.g. README.md docs/results.md")
    ap.add_argument("--metrics", type=Path, default=Path("metrics/evaluate.json"),
                    help="the evaluate stage's metrics (default: metrics/evaluate.json, from the repo root)")
    ap.add_argument("--label-efficiency", type=Path, default=Path("metrics/label_efficiency.json"),
                    help="the label-efficiency stage's metrics (default: metrics/label_efficiency.json)")
    args = ap.parse_args(argv)
    try:
        metrics = json.loads(args.metrics.read_text())
        eff = json.loads(args.label_efficiency.read_text()) if args.label_efficiency.is_file() else None
        texts = {doc: refresh_doc(doc, metrics, eff) for doc in args.docs}  # every file checked before any is written
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e if not isinstance(e, KeyError) else f'{args.metrics} lacks {e}'}", file=sys.stderr)
        return 2
    for doc, text in texts.items():
        atomic_write_text(doc, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
