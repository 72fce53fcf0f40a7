"""A provider simulator speaking the Samsara and impact.com async-export formats.

Used by the demo, the integration and chaos tests and the benchmarks: deterministic, scriptable
per job (behaviours keyed by Samsara ``startHour`` / impact.com report id) and per request (faults).
"""

from worker.dev.simulator.asgi import create_app
from worker.dev.simulator.config import ImpactBehaviour, SamsaraBehaviour, SimulatorConfig
from worker.dev.simulator.server import SimulatorThread

__all__ = ["ImpactBehaviour", "SamsaraBehaviour", "SimulatorConfig", "SimulatorThread", "create_app"]
