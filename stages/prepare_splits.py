"""Stage `prepare-splits`: subject-disjoint case splits (params: data, splits)."""

import argparse
from pathlib import Path

from vitalssl.params import data_config, load_params, split_config
from vitalssl.pipeline import run_prepare_splits

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="splits JSON to write")
    args = ap.parse_args()
    params = load_params()
    run_prepare_splits(data_config(params), split_config(params), Path(args.out))
