"""A process that owns a LocalStack with a worker, beat and exports in flight, for the kill tests.

``python -m tests.stack_owner [redis|rabbitmq]`` prints one JSON line (key prefix, queue)
once the worker answers and three exports are in flight, then waits to be killed.
"""

from __future__ import annotations

import json
import sys
import time

from worker.dev.localstack import Broker, LocalStack
from worker.dev.simulator import SamsaraBehaviour, SimulatorConfig


def main(broker: Broker) -> None:
    config = SimulatorConfig(samsara_default=SamsaraBehaviour(requested_seconds=1, processing_seconds=600))
    with LocalStack(simulator_config=config, require_real_redis=True, broker=broker) as stack:
        assert stack.client is not None and stack.settings is not None
        stack.start_worker(concurrency=2)
        stack.start_beat()
        stack.wait_ready()
        for vehicle in range(1, 4):
            params = {"startHour": "2026-11-23T00:00:00Z", "endHour": "2026-11-24T00:00:00Z", "vehicleIds": [vehicle]}
            stack.client.submit("samsara", params)
        announce = {"key_prefix": stack.settings.key_prefix, "queue": stack.settings.queue}
        print(json.dumps(announce), flush=True)
        while True:
            time.sleep(0.5)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "redis")  # type: ignore[arg-type]
