"""The data stages (`demo`, `prepare-splits`, `build-windows`) as functions of typed configs and paths.

The stage scripts and ``ttm-vitaldb`` call these; they print the stage's summary
and write its DVC metrics file.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from ..atomic import atomic_write_text, write_json
from ..config import from_dict
from ..data.config import DataConfig, DemoConfig, SplitConfig, WindowConfig
from ..data.demo import generate_demo, load_faults
from ..data.download import fetch_cases
from ..data.quality import score_against_faults
from ..data.sources import case_set_ids, make_source
from ..data.clinical import filter_by_tracks
from ..data.splits import select_cases, split_cases_of, split_clinical_of, splits_document
from ..data.windows import build_split
from .params import section


def data_config(params: dict) -> DataConfig:
    return from_dict(DataConfig, section(params, "data"), "data")


def demo_config(params: dict) -> DemoConfig:
    return from_dict(DemoConfig, section(params, "demo"), "demo")


def split_config(params: dict) -> SplitConfig:
    return from_dict(SplitConfig, section(params, "splits"), "splits")


def window_config(params: dict) -> WindowConfig:
    return from_dict(WindowConfig, section(params, "windows"), "windows")


def run_demo(cfg: DemoConfig, out_dir: Path, progress: bool = True) -> dict:
    summary = generate_demo(cfg, Path(out_dir), progress=progress)
    print(f"demo: wrote {summary['cases']} cases of {summary['subjects']} subjects to {out_dir}; "
          f"faults: {summary['faults']}")
    return summary


def run_prepare_splits(data: DataConfig, cfg: SplitConfig, out_path: Path, tracks: tuple[str, ...]) -> dict:
    """Split the cases of the source that hold every track of ``tracks`` (the configured waveforms)."""
    case_set = case_set_ids(cfg.case_set)
    source = make_source(data, case_set)
    available = [c for c in source.available() if case_set is None or c in case_set]
    available, track_filter = filter_by_tracks(available, source.track_lists(available), tuple(tracks))
    _say_track_filter(track_filter)
    caseids = select_cases(available, case_set, cfg)
    subjects = source.subjects()
    clinical = source.clinical()
    for note in source.notes:
        print(f"prepare-splits: {note}")
    doc, text = splits_document(caseids, subjects, cfg, source.name, clinical, track_filter)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_path, text)
    prov = doc["provenance"]
    print(f"prepare-splits: {len(caseids)} cases from source {source.name!r} ({cfg.mode}, case set "
          f"{cfg.case_set}) -> train {prov['counts']['train']}, val {prov['counts']['val']}, "
          f"test {prov['counts']['test']} -> {out_path}")
    if prov["case_level_fallback"]:
        print(f"prepare-splits: {prov['case_level_fallback']} case(s) have no subject id in the clinical table; "
              "they were split at case level (listed under case_level_cases)")
    return doc


def _say_track_filter(r: dict) -> None:
    if r["cases_dropped"]:
        by = ", ".join(f"{t}: {n}" for t, n in r["dropped_missing_track"].items())
        print(f"prepare-splits: {r['cases_dropped']} of {r['cases_checked']} case(s) dropped for a missing track "
              f"(missing {by}; a case missing both counts under each)")
    if r["track_list_unreadable"]:
        print(f"prepare-splits: {len(r['track_list_unreadable'])} case(s) kept whose track list could not be read "
              f"(build-windows names why): {', '.join(map(str, r['track_list_unreadable'][:10]))}")


def run_build_windows(data: DataConfig, cfg: WindowConfig, split_file: Path, split: str, out_dir: Path,
                      metrics_path: Path | None, progress: bool = True) -> dict:
    split_file = Path(split_file)
    if not split_file.exists():
        raise FileNotFoundError(f"split file {split_file} not found (run prepare-splits first)")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ValueError(f"output folder {out_dir} is a file, not a folder (--outdir): move it or choose another")
    try:
        doc = json.loads(split_file.read_text())
    except ValueError as e:
        raise ValueError(f"split file {split_file} is not valid JSON: {e}") from e
    cases = split_cases_of(doc, split, split_file)
    if doc.get("provenance", {}).get("source") != data.source:
        raise ValueError(f"{split_file} was made from source {doc.get('provenance', {}).get('source')!r} but "
                         f"data.source is {data.source!r}; re-run prepare-splits")
    source = make_source(data, None)
    truth, faults = None, None
    if data.source == "demo":
        faults = load_faults(Path(data.demo_dir))
        truth = Counter()

    def on_case(res):
        if res.error is not None:  # said as it happens: a run that ends with no window has told why by then
            tqdm.write(f"build-windows {split}: case {res.caseid} skipped: {res.error.reason}: {res.error.detail}")
        elif truth is not None:
            truth.update(score_against_faults(res.starts_s, res.kept, faults.get(res.caseid, []), cfg.window_s))

    report = build_split(source, cases, cfg, Path(out_dir), split, progress=progress, on_case=on_case,
                         clinical=split_clinical_of(doc, split_file))
    report["source"] = data.source
    if truth is not None:
        truth = dict(truth)
        truth["faulted_rejected_frac"] = truth.get("faulted_rejected", 0) / max(truth.get("faulted", 0), 1)
        truth["clean_kept_frac"] = truth.get("clean_kept", 0) / max(truth.get("clean", 0), 1)
        rejected = truth.get("faulted_rejected", 0) + truth.get("clean", 0) - truth.get("clean_kept", 0)
        truth["rejection_precision"] = truth.get("faulted_rejected", 0) / max(rejected, 1)
        report["gate_vs_demo_faults"] = truth
    print(f"build-windows {split}: {report['cases_read']}/{report['cases_total']} cases read, "
          f"{report['windows_kept']}/{report['windows_total']} windows kept; rejected by criterion "
          f"{report['rejected_by_criterion']}; failed cases {report['cases_failed_by_reason']}")
    for c in report["cases_without_windows_list"]:
        why = "shorter than one window" if c["windows"] == 0 else f"all {c['windows']} windows rejected by the gate"
        print(f"build-windows {split}: case {c['caseid']} ({c['duration_s']:g} s) gave no window: {why}")
    for key, caseids in report["labels_missing"].items():
        if caseids:
            print(f"build-windows {split}: label {key} (track {cfg.label_tracks[key]!r}) is not in {len(caseids)} "
                  f"of {report['cases_read']} case(s) read, its column is empty for their windows"
                  + (" (all cases: check the track name)" if key in report.get("labels_absent", ()) else "") + ": "
                  f"case(s) {', '.join(map(str, caseids[:10]))}" + (" ..." if len(caseids) > 10 else ""))
    for w in report["case_warnings"]:
        print(f"build-windows {split}: case {w['caseid']}: {w['criterion']} rejected {w['rejected']} of its "
              f"{w['windows']} windows ({w['hint']})")
    if metrics_path is not None:
        metrics_path = Path(metrics_path)
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(metrics_path, report)
    return report


def run_fetch(data: DataConfig, split_file: Path, splits: list, progress: bool = True) -> dict:
    """Download the cases of ``splits`` of a split file into the vitaldb cache; print each failure and a summary."""
    if data.source != "vitaldb":
        raise ValueError(f"fetch downloads for data.source vitaldb; data.source is {data.source!r}")
    split_file = Path(split_file)
    if not split_file.exists():
        raise FileNotFoundError(f"split file {split_file} not found (run prepare-splits first)")
    try:
        doc = json.loads(split_file.read_text())
    except ValueError as e:
        raise ValueError(f"split file {split_file} is not valid JSON: {e}") from e
    caseids = sorted({c for s in splits for c, _ in split_cases_of(doc, s, split_file)})
    summary = fetch_cases(data, caseids, progress=progress,
                          on_failure=lambda e: tqdm.write(f"fetch: case {e.caseid}: {e.reason}: {e.detail}"))
    print(f"fetch: {len(caseids)} cases of split(s) {', '.join(splits)}: {summary['cached']} already cached, "
          f"{summary['fetched']} fetched ({summary['received'] / 1e6:.1f} MB in {summary['seconds']:.1f} s), "
          f"{summary['failed']} failed {summary['failed_by_reason']} -> {data.cache_dir}")
    return summary
