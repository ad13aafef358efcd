"""Stage `evaluate`: reconstruction against non-learned baselines and linear probes of the pretrained encoder.

Reports val and test; probes are fitted on train (params: `evaluate`).
"""

import argparse
from pathlib import Path

from vitalssl.entry.errors import one_line_errors
from vitalssl.entry.evaluate_stage import eval_config, run_evaluate
from vitalssl.entry.params import load_params


@one_line_errors
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", required=True, help="the pretrain stage's output folder")
    ap.add_argument("--windows-dir", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--reconstruction-plot", required=True)
    ap.add_argument("--probes-plot", required=True)
    args = ap.parse_args()
    run_evaluate(eval_config(load_params()), Path(args.model_dir), Path(args.windows_dir), Path(args.metrics),
                 Path(args.reconstruction_plot), Path(args.probes_plot))


if __name__ == "__main__":
    main()
