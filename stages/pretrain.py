"""Stage `pretrain`: masked signal modeling (params: top-level keys, model, stft).

Re-running after an interruption resumes from the last completed epoch.
"""

from pathlib import Path

from vitalssl.entry.errors import ArgumentParser, one_line_errors
from vitalssl.entry.params import load_params
from vitalssl.entry.pretrain_stage import pretrain_config, run_pretrain


@one_line_errors
def main() -> None:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--work-dir", required=True, help="resumable state; must not be a DVC output")
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--plots", required=True)
    args = ap.parse_args()
    cfg = pretrain_config(load_params())
    run_pretrain(cfg, Path(args.data_dir), Path(args.output_dir), Path(args.work_dir),
                 metrics_path=Path(args.metrics), plots_path=Path(args.plots), resume="auto")


if __name__ == "__main__":
    main()
