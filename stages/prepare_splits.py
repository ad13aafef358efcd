"""Stage `prepare-splits`: subject-disjoint case splits (params: data, splits, windows.ppg_track/ecg_track)."""

from pathlib import Path

from vitalssl.entry.data_stages import data_config, run_prepare_splits, split_config, window_config
from vitalssl.entry.errors import ArgumentParser, one_line_errors
from vitalssl.entry.params import load_params


@one_line_errors
def main() -> None:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="splits JSON to write")
    args = ap.parse_args()
    params = load_params()
    wcfg = window_config(params)
    run_prepare_splits(data_config(params), split_config(params), Path(args.out), (wcfg.ppg_track, wcfg.ecg_track))


if __name__ == "__main__":
    main()
