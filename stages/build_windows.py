"""Stage `build-windows`: gated, normalised windows of one split (params: data, windows)."""

from pathlib import Path

from vitalssl.entry.data_stages import data_config, run_build_windows, window_config
from vitalssl.entry.errors import ArgumentParser, one_line_errors
from vitalssl.entry.params import load_params


@one_line_errors
def main() -> None:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--split", required=True)
    ap.add_argument("--split-file", required=True)
    ap.add_argument("--outdir", required=True)
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    params = load_params()
    run_build_windows(data_config(params), window_config(params), Path(args.split_file), args.split,
                      Path(args.outdir), Path(args.metrics))


if __name__ == "__main__":
    main()
