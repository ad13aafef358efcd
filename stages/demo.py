"""Stage `demo`: write the synthetic demo cases (params: demo, data.demo_dir)."""

from pathlib import Path

from vitalssl.entry.data_stages import data_config, demo_config, run_demo
from vitalssl.entry.errors import one_line_errors
from vitalssl.entry.params import load_params


@one_line_errors
def main() -> None:
    params = load_params()
    run_demo(demo_config(params), Path(data_config(params).demo_dir))


if __name__ == "__main__":
    main()
