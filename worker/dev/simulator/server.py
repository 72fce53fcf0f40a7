"""Run the simulator in a background thread, for tests, the demo and benchmarks."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from worker.dev.simulator.asgi import create_app
from worker.dev.simulator.config import SimulatorConfig
from worker.dev.simulator.jobs import Clock

HOST = "127.0.0.1"


class SimulatorThread:
    """uvicorn serving the simulator on ``127.0.0.1``; port 0 picks a free port.

    The socket is bound here, before the thread starts, so ``url`` is known at once and a busy
    port fails in the caller rather than in the background thread.
    """

    def __init__(self, config: SimulatorConfig | None = None, port: int = 0, *, clock: Clock = time.time) -> None:
        self.app = create_app(config, clock=clock)
        # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on connections accepted from a
        # listener that says so, and without it every keep-alive request stalls 40 ms (delayed ACK).
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((HOST, port))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="simulator", daemon=True
        )

    def start(self, timeout: float = 10.0) -> SimulatorThread:
        """Start serving and block until the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"simulator did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
