"""Stage `export`: the evaluated checkpoint as a Hugging Face model folder (config.json, model.safetensors,
decoder.safetensors, vitalssl.json with the preprocessing contract, and a model card README.md).

Params: `evaluate.checkpoint` (the file exported) and `evaluate.ci` (the card's interval coverage).
"""

from pathlib import Path

from vitalssl.entry.errors import ArgumentParser, one_line_errors
from vitalssl.entry.evaluate_stage import eval_config
from vitalssl.entry.export_stage import run_export
from vitalssl.entry.params import load_params


@one_line_errors
def main() -> None:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", required=True, help="the pretrain stage's output folder")
    ap.add_argument("--windows-dir", required=True)
    ap.add_argument("--metrics", required=True, help="the evaluate stage's metrics JSON")
    ap.add_argument("--out", required=True, help="the export folder")
    args = ap.parse_args()
    cfg = eval_config(load_params())
    run_export(Path(args.model_dir) / cfg.checkpoint, Path(args.windows_dir), Path(args.metrics), Path(args.out),
               cfg.ci)


if __name__ == "__main__":
    main()
