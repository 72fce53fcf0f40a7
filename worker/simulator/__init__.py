"""A provider simulator speaking the Samsara and impact.com async-export formats.

Used by the demo, the integration and chaos tests and the benchmarks: deterministic, scriptable
per job (behaviours keyed by Samsara ``startHour`` / impact.com report id) and per request (faults).
"""

from worker.simulator.app import create_app
from worker.simulator.config import ImpactBehaviour, SamsaraBehaviour, SimulatorConfig
from worker.simulator.server import SimulatorThread

__all__ = ["ImpactBehaviour", "SamsaraBehaviour", "SimulatorConfig", "SimulatorThread", "create_app"]
