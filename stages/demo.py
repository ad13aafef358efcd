"""Stage `demo`: write the synthetic demo cases (params: demo, data.demo_dir)."""

from pathlib import Path

from vitalssl.params import data_config, demo_config, load_params
from vitalssl.pipeline import run_demo

if __name__ == "__main__":
    params = load_params()
    run_demo(demo_config(params), Path(data_config(params).demo_dir))
