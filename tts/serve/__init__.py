"""``tts-scale serve``: test-time scaling behind an OpenAI-compatible endpoint.

Any OpenAI client gets a pipeline's test-time scaling by naming the pipeline as the model::

    tts-scale serve recipes/serve_self_consistency.yaml --backend fake --port 8000

- :mod:`tts.serve.protocol`: the wire format (requests read and refused in one line, responses,
  stream chunks, usage);
- :mod:`tts.serve.pipelines`: the served pipelines, their shared schedulers, the server's caps
  (:class:`ServeOptions`) and what one request runs (:class:`Plan`);
- :mod:`tts.serve.metrics`: counters in the Prometheus text format;
- :mod:`tts.serve.app`: the ASGI app (Starlette) with auth, limits, streaming and cancellation.

Only this package imports Starlette and uvicorn (the ``serve`` extra), and only when used:
``import tts`` and ``import tts.serve`` stay free of them.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tts.serve.app import Server, create_app, read_api_key
    from tts.serve.pipelines import Pipelines, ServeOptions

__all__ = ["Pipelines", "ServeOptions", "Server", "create_app", "read_api_key", "run_server", "running"]

_HOMES = {
    "Pipelines": "tts.serve.pipelines",
    "ServeOptions": "tts.serve.pipelines",
    "Server": "tts.serve.app",
    "create_app": "tts.serve.app",
    "read_api_key": "tts.serve.app",
}


def _need_extra() -> None:
    from tts.errors import ConfigError

    for module in ("starlette", "uvicorn"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(f"tts-scale serve needs {module}: run `pip install 'tts-scale[serve]'`.") from None


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'tts.serve' has no attribute {name!r}")
    if home == "tts.serve.app":
        _need_extra()
    return getattr(importlib.import_module(home), name)


def run_server(server: Server, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Serve ``server`` with uvicorn until interrupted (blocks)."""
    _need_extra()
    import uvicorn

    config = uvicorn.Config(
        server.app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=log_level in ("info", "debug"),
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()


@contextlib.contextmanager
def running(server: Server, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``server`` from a background thread on a free port of ``host`` while the block runs;
    yields the base URL (``http://127.0.0.1:PORT/v1``). For tests and notebooks."""
    _need_extra()
    import uvicorn

    sock = socket.socket()
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(server.app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, name="tts-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start; see its log")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}/v1"
    finally:
        uv.should_exit = True
        thread.join(10)
        sock.close()
