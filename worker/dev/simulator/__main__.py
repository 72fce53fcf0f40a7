"""``python -m worker.dev.simulator --host 127.0.0.1 --port 8765 [--config file.json] [--time-scale N]``."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from worker.dev.simulator.asgi import create_app
from worker.dev.simulator.config import SimulatorConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker.dev.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--config", type=Path, help="JSON file holding a SimulatorConfig")
    parser.add_argument("--time-scale", type=float, help="overrides time_scale from the config file")
    args = parser.parse_args(argv)

    config = SimulatorConfig.model_validate_json(args.config.read_text()) if args.config else SimulatorConfig()
    if args.time_scale is not None:
        config = SimulatorConfig.model_validate({**config.model_dump(), "time_scale": args.time_scale})
    print(f"provider simulator on http://{args.host}:{args.port} (time_scale={config.time_scale})", flush=True)
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
