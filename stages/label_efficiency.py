"""Stage `label-efficiency`: the pretrained encoder (frozen and fine-tuned), the same network from scratch and the
beat features, trained on nested fractions of the train subjects; early stopping on val, scores on test
(params: `label_efficiency`, `evaluate`)."""

import argparse
from pathlib import Path

from vitalssl.entry.errors import one_line_errors
from vitalssl.entry.evaluate_stage import eval_config
from vitalssl.entry.label_efficiency_stage import label_efficiency_config, run_label_efficiency
from vitalssl.entry.params import load_params


@one_line_errors
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", required=True, help="the pretrain stage's output folder")
    ap.add_argument("--windows-dir", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--plots-dir", required=True, help="one CSV per task: the metric against the label fraction")
    ap.add_argument("--figure", required=True)
    args = ap.parse_args()
    params = load_params()
    run_label_efficiency(eval_config(params), label_efficiency_config(params), Path(args.model_dir),
                         Path(args.windows_dir), Path(args.metrics), Path(args.plots_dir), Path(args.figure))


if __name__ == "__main__":
    main()
