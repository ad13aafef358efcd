"""Stage `pretrain`: masked signal modeling (params: top-level keys, model, stft).

Re-running after an interruption resumes from the last completed epoch.
"""

import argparse
from pathlib import Path

from vitalssl.config import pretrain_config
from vitalssl.params import load_params
from vitalssl.train import pretrain

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--work-dir", required=True, help="resumable state; must not be a DVC output")
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--plots", required=True)
    args = ap.parse_args()
    cfg = pretrain_config(load_params())
    pretrain(cfg, Path(args.data_dir), Path(args.output_dir), Path(args.work_dir),
             metrics_path=Path(args.metrics), plots_path=Path(args.plots), resume="auto")
