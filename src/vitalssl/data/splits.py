"""Subject-disjoint train/val/test splits of VitalDB cases."""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Optional

import numpy as np

from ..config import to_dict
from .config import SplitConfig

SPLITS = ("train", "val", "test")


def select_cases(available: list[int], case_set: Optional[set[int]], cfg: SplitConfig) -> list[int]:
    """Eligible cases: ``available`` within the case set; ``fasttrack`` draws ``fasttrack_cases`` of them."""
    eligible = sorted(c for c in available if case_set is None or c in case_set)
    if cfg.mode == "full":
        if not eligible:
            raise ValueError(f"no case of case set {cfg.case_set!r} is available from the source")
        return eligible
    if len(eligible) < cfg.fasttrack_cases:
        raise ValueError(f"splits.mode=fasttrack needs {cfg.fasttrack_cases} cases but the source has "
                         f"{len(eligible)} in case set {cfg.case_set!r}; use splits.mode=full or lower "
                         f"splits.fasttrack_cases")
    rng = np.random.default_rng(cfg.seed)
    return sorted(int(c) for c in rng.choice(eligible, cfg.fasttrack_cases, replace=False))


def split_cases(caseids: list[int], subject_of: Optional[dict[int, str]], cfg: SplitConfig) -> dict:
    """Assign whole subjects to splits so that case counts follow the ratios.

    Cases without a subject id (no clinical table, or not in it) are their own
    group; the result lists them under ``case_level_cases``.
    """
    dup = sorted(c for c, k in Counter(caseids).items() if k > 1)
    if dup:
        raise ValueError(f"case id(s) listed more than once: {', '.join(map(str, dup))}")
    subject_of = subject_of or {}
    groups: dict[str, list[int]] = {}
    case_level = []
    for c in sorted(caseids):
        if c in subject_of:
            key = f"s{subject_of[c]}"
        else:
            key = f"c{c}"
            case_level.append(c)
        groups.setdefault(key, []).append(c)
    keys = sorted(groups)
    rng = np.random.default_rng(cfg.seed)
    order = [keys[i] for i in rng.permutation(len(keys))]
    ratios = {"train": cfg.train, "val": cfg.val, "test": cfg.test}
    assigned: dict[str, list[str]] = {s: [] for s in SPLITS}
    counts = {s: 0 for s in SPLITS}
    total = len(caseids)
    for key in order:
        # the split furthest below its target share takes the next subject
        deficit = {s: ratios[s] * total - counts[s] for s in SPLITS if ratios[s] > 0}
        s = max(deficit, key=lambda k: (deficit[k], -SPLITS.index(k)))
        assigned[s].append(key)
        counts[s] += len(groups[key])
    out = {}
    for s in SPLITS:
        cases = sorted(c for k in assigned[s] for c in groups[k])
        subjects = sorted({subject_of[c] for c in cases if c in subject_of}, key=lambda x: (len(x), x))
        out[s] = {"caseids": cases, "subjectids": [subject_of.get(c) for c in cases], "subjects": subjects}
    for s in SPLITS:
        if ratios[s] > 0 and not out[s]["caseids"]:
            raise ValueError(f"split {s!r} is empty: {total} case(s) in {len(keys)} subject group(s) cannot fill "
                             f"train/val/test at ratios {cfg.train}/{cfg.val}/{cfg.test}; add cases or change "
                             f"splits.{s}")
    out["case_level_cases"] = case_level
    return out


def splits_document(caseids, subject_of, cfg: SplitConfig, source: str, clinical=None,
                    track_filter: Optional[dict] = None) -> tuple[dict, str]:
    """The splits JSON (as dict and as canonical text: same params -> same bytes).

    ``clinical`` = (columns, caseid -> {column: value}) from the clinical table goes under
    ``clinical``, for the chosen cases (NaN and missing text as null); ``track_filter``, the
    report of the cases dropped for a missing track, goes under ``provenance``.
    """
    body = split_cases(caseids, subject_of, cfg)
    columns, values = clinical or ([], {})
    doc = {
        "provenance": {"source": source, "params": to_dict(cfg),
                       "counts": {s: len(body[s]["caseids"]) for s in SPLITS},
                       "subject_level": not body["case_level_cases"],
                       "case_level_fallback": len(body["case_level_cases"]),
                       **({"track_filter": track_filter} if track_filter is not None else {})},
        "clinical": {"columns": list(columns),
                     "cases": {str(c): {k: _json_value(v) for k, v in values[c].items()}
                               for c in sorted(caseids) if c in values}},
        **body,
    }
    return doc, json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n"


def _json_value(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def split_clinical_of(doc, path) -> dict[int, dict]:
    """caseid -> {clinical column: value} of a splits document (none for a file without a ``clinical`` entry)."""
    part = doc.get("clinical", {"cases": {}})
    cases = part.get("cases") if isinstance(part, dict) else None
    if not isinstance(cases, dict) or not all(isinstance(v, dict) for v in cases.values()):
        raise ValueError(f"split file {path}: `clinical` needs `cases`, an object of case id -> column values")
    return {int(c): {k: (math.nan if v is None else v) for k, v in row.items()} for c, row in cases.items()}


def split_cases_of(doc, split: str, path) -> list[tuple[int, Optional[str]]]:
    """``[(caseid, subjectid)]`` of ``split`` in a splits document read from ``path``, checked first.

    A split file edited by hand (or from another tool) is refused, naming the file, when a
    split is missing or malformed, a case id appears twice in a split, or a case is in two splits.
    """
    if not isinstance(doc, dict):
        raise ValueError(f"split file {path}: not a splits document (a JSON object with train/val/test)")
    names = [k for k in SPLITS if k in doc] + ([split] if split not in SPLITS else [])
    if split not in doc or not isinstance(doc[split], dict) or split == "provenance":
        raise ValueError(f"split {split!r} not in {path} (has: {', '.join(k for k in doc if k != 'provenance')})")
    seen: dict[int, str] = {}
    for name in names:
        part = doc[name]
        ids = part.get("caseids") if isinstance(part, dict) else None
        subj = part.get("subjectids") if isinstance(part, dict) else None
        if not isinstance(ids, list) or not isinstance(subj, list) or len(ids) != len(subj) or \
                not all(isinstance(c, int) and not isinstance(c, bool) for c in ids):
            raise ValueError(f"split file {path}: split {name!r} needs lists caseids (integers) and subjectids "
                             f"of the same length")
        dup = sorted(c for c, k in Counter(ids).items() if k > 1)
        if dup:
            raise ValueError(f"split file {path}: split {name!r} lists case id(s) more than once: "
                             f"{', '.join(map(str, dup))}")
        both = sorted(c for c in ids if c in seen)
        if both:
            raise ValueError(f"split file {path}: case id(s) {', '.join(map(str, both))} are in both split "
                             f"{seen[both[0]]!r} and split {name!r}")
        seen.update({c: name for c in ids})
    _refuse_shared_subjects(doc, names, path)
    return list(zip(doc[split]["caseids"], doc[split]["subjectids"]))


def _subject_text(s) -> Optional[str]:
    """A split file's subject id as the opaque label it is (an integer written by hand reads as its digits)."""
    return None if s is None else str(s)


def _refuse_shared_subjects(doc: dict, names: list, path) -> None:
    """A subject with cases in two splits would make a held-out split's scores partly in-sample: refuse it."""
    owner: dict[str, str] = {}
    for name in names:
        subj = doc[name]["subjectids"]
        bad = [s for s in subj if not (s is None or isinstance(s, str) or (isinstance(s, int) and
                                                                             not isinstance(s, bool)))]
        if bad:
            raise ValueError(f"split file {path}: split {name!r} has subject id {bad[0]!r}; subject ids are "
                             f"strings (or null for a case without one)")
        mine = {_subject_text(s) for s in subj} - {None}
        shared = sorted((s for s in mine if s in owner), key=lambda x: (len(x), x))
        if shared:
            other = owner[shared[0]]
            both = [s for s in shared if owner[s] == other]
            raise ValueError(f"split file {path}: subject(s) {', '.join(map(repr, both))} have cases in both "
                             f"split {other!r} and split {name!r}; a subject's cases must all be in one split")
        owner.update({s: name for s in mine})
