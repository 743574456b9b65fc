"""A killable worker process for symbolic answer comparison (math-verify / sympy).

Why a separate process: sympy can run for minutes (or forever) on a hostile expression such as
``9^{9^{9^{9}}}``, much of it inside C code that no signal interrupts, and math-verify's own time
limit uses ``SIGALRM``, which only works in the main thread. A strategy or a verifier may call
:func:`tts.verifiers.math.equivalent` from any thread, so the only limit that always holds is a
process the caller can kill.

Two halves live here, and the file imports nothing from ``tts`` so it can run as a plain script:

- the parent side, :class:`SymbolicPool`: a few persistent workers, each used by one caller at a time.
  A comparison that misses its deadline kills its worker and starts a fresh one in the background,
  so the caller gets an answer on time and the next caller finds a live worker.
- the child side, :func:`main`: reads one JSON request per line on stdin, answers one JSON line on
  stdout. It also arms a soft timer (``setitimer``, a little under the hard deadline) that stops
  Python-level sympy work early, so most slow comparisons end without a restart.

The child is started as ``python -c <bootstrap>`` that runs this file by path: not ``-m`` (the
package may not be importable in the child's working directory) and not ``python _worker.py``
(that would put ``verifiers/`` first on ``sys.path``, where ``math.py`` would shadow the standard
library's ``math``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any, Literal

__all__ = ["SymbolicPool", "Verdict", "WorkerUnavailable"]

logger = logging.getLogger(__name__)

Verdict = Literal["equal", "different", "timeout"]
"""A worker's answer: the expressions are equal, they differ (or could not be compared), or time ran out."""

_SOFT_FRACTION = 0.8
"""The child stops itself at this fraction of the hard deadline, leaving time to reply before a kill."""

_BOOTSTRAP = (
    "import runpy, sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
    "runpy.run_path(sys.argv[1], run_name='__main__')"
)


class WorkerUnavailable(RuntimeError):
    """No worker could start or answer (math-verify missing, interpreter crash, startup too slow)."""


# --------------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------------


class _Worker:
    """One child process plus a reader thread that turns its stdout lines into a queue."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.ready = False
        assert self.proc.stdout is not None
        threading.Thread(
            target=self._read, args=(self.proc.stdout,), daemon=True, name=f"symbolic-worker-{self.proc.pid}"
        ).start()

    def _read(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                try:
                    self.replies.put(json.loads(line))
                except json.JSONDecodeError:
                    logger.debug("symbolic worker %d wrote a non-JSON line: %r", self.proc.pid, line)
        except (OSError, ValueError):
            pass
        self.replies.put(None)  # end of stream: the process exited or was killed

    def _replies_until(self, deadline: float) -> Iterator[dict[str, Any] | None]:
        """The child's replies as they come, until ``deadline`` (monotonic); None means it died."""
        while (left := deadline - time.monotonic()) > 0:
            try:
                yield self.replies.get(timeout=left)
            except queue.Empty:
                return

    def wait_ready(self, timeout: float) -> bool:
        """Wait for the child's ``ready`` line (imports done); False if it died or is too slow."""
        if self.ready:
            return True
        for msg in self._replies_until(time.monotonic() + timeout):
            if msg is None:
                return False
            if msg.get("ready"):
                self.ready = True
                return True
        return False

    def ask(self, request_id: int, gold: str, pred: str, timeout: float) -> tuple[Verdict, bool]:
        """Send one comparison and wait at most ``timeout`` seconds.

        Returns the verdict and whether this worker is still usable: False when it died, or when
        it is still busy past the deadline (it must be killed, it may never come back).
        """
        assert self.proc.stdin is not None
        request = {"id": request_id, "gold": gold, "pred": pred, "soft": max(0.05, timeout * _SOFT_FRACTION)}
        deadline = time.monotonic() + timeout
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            logger.warning("symbolic worker %d died; starting another", self.proc.pid)
            return "different", False
        for msg in self._replies_until(deadline):
            if msg is None:
                logger.warning(
                    "symbolic worker %d died comparing %.80r and %.80r; judged different", self.proc.pid, gold, pred
                )
                return "different", False
            if msg.get("id") != request_id:
                continue  # a stale reply; cannot happen while busy workers are killed, but be safe
            status = msg.get("status")
            if status == "error":
                logger.debug("symbolic worker could not compare %r and %r: %s", gold, pred, msg.get("error"))
            if status == "timeout":
                return "timeout", True
            return ("equal" if msg.get("equal") else "different"), True
        return "timeout", False

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """Kill the child (it may be stuck in C code that ignores everything else) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            logger.warning("symbolic worker %d did not exit after SIGKILL", self.proc.pid)


class SymbolicPool:
    """A few persistent worker processes that compare answers under a hard time limit.

    Thread-safe: each call borrows one idle worker (waiting if all are busy, which is bounded by the
    other calls' time limits) and returns it. Workers start lazily, on first use, so importing the
    package costs nothing; a worker killed for a timeout is replaced at once and the replacement's
    start-up (importing sympy, about a second) is not charged to any comparison's time limit.
    """

    def __init__(self, workers: int = 2, *, startup_timeout: float = 60.0) -> None:
        if workers < 1:
            raise ValueError(f"SymbolicPool workers must be >= 1, got {workers}.")
        self.size = workers
        self.startup_timeout = startup_timeout
        self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        for _ in range(workers):
            self._idle.put(None)  # a slot whose worker is started on first use
        self._ids = itertools.count()
        self._closed = False
        self._all: list[_Worker] = []
        self._lock = threading.Lock()

    def _start(self) -> _Worker:
        worker = _Worker()
        with self._lock:
            self._all = [w for w in self._all if w.alive] + [worker]
        return worker

    def compare(self, gold: str, pred: str, timeout: float) -> Verdict:
        """Compare two LaTeX answers with math-verify in a worker, never longer than ``timeout`` s
        (plus a worker's one-off start-up).

        Raises :class:`WorkerUnavailable` when no worker can start; the caller decides what a
        missing judgement means (``equivalent`` treats it as "not equivalent").
        """
        if self._closed:
            raise WorkerUnavailable("SymbolicPool is closed; create a new pool.")
        worker = self._idle.get()
        try:
            if worker is None or not worker.alive:
                worker = self._start()
            if not worker.wait_ready(self.startup_timeout):
                worker.kill()
                worker = None
                raise WorkerUnavailable(
                    "the symbolic worker did not start: check that `python -c 'import math_verify'` "
                    "works in this interpreter (pip install 'math-verify>=0.8')."
                )
            verdict, usable = worker.ask(next(self._ids), gold, pred, timeout)
            if not usable:
                # Dead, or still busy past its deadline: replace it now, so its start-up overlaps
                # whatever the caller does next.
                worker.kill()
                worker = self._start()
            return verdict
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        """Kill every worker; later calls raise :class:`WorkerUnavailable`."""
        self._closed = True
        with self._lock:
            workers, self._all = self._all, []
        for w in workers:
            w.kill()


# --------------------------------------------------------------------------------------------------
# Child side
# --------------------------------------------------------------------------------------------------


class _SoftTimeout(BaseException):
    """Raised by the soft timer. A BaseException so that sympy's and math-verify's broad
    ``except Exception`` handlers let it through."""


_armed = False


def _on_alarm(signum: int, frame: object) -> None:
    if _armed:
        raise _SoftTimeout


def _die_with_parent() -> None:
    """Exit when the parent process goes away, even mid-comparison.

    A closed stdin ends the serving loop, but only between comparisons; this watchdog also ends a
    long one. (Linux's PR_SET_PDEATHSIG would be stronger but fires when the parent *thread* that
    started the worker exits, and workers are started from whichever thread needs one.)
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def _compare(gold: str, pred: str) -> bool:
    from math_verify import parse, verify

    # Our soft timer and the parent's kill replace math-verify's SIGALRM-based limits.
    g = parse(f"${gold}$", parsing_timeout=None)
    p = parse(f"${pred}$", parsing_timeout=None)
    return bool(g) and bool(p) and bool(verify(g, p, timeout_seconds=None))


def _run_one(gold: str, pred: str, soft: float) -> dict[str, Any]:
    import signal

    global _armed
    timer = hasattr(signal, "setitimer")  # POSIX; elsewhere only the parent's kill limits the time
    _armed = True
    if timer:
        signal.setitimer(signal.ITIMER_REAL, soft)
    try:
        return {"status": "ok", "equal": _compare(gold, pred)}
    except _SoftTimeout:
        return {"status": "timeout", "equal": False}
    except Exception as exc:  # a parser bug must not take the worker down
        return {"status": "error", "equal": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    finally:
        _armed = False
        if timer:
            signal.setitimer(signal.ITIMER_REAL, 0)


_WARM_UP = (
    ("x^2+2x+1", "(x+1)^2"),
    ("\\cot x", "\\frac{\\cos x}{\\sin x}"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("[1,2)", "(-\\infty, 2)"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "(1,2)"),
    ("x=5", "\\frac{10}{2}"),
)
"""Comparisons run before the worker says "ready": they load the parts of sympy that are imported
lazily (simplification, sets, matrices), so no caller's time limit pays for them (~0.5 s, once)."""


def main() -> None:
    """Serve comparisons on stdin/stdout until stdin closes."""
    import signal

    _die_with_parent()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # silence "timeout is disabled"
    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, _on_alarm)
    for gold, pred in _WARM_UP:
        _compare(gold, pred)
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            reply = {"id": req["id"], **_run_one(str(req["gold"]), str(req["pred"]), float(req["soft"]))}
        except _SoftTimeout:  # fired in the gap between the comparison and disarming
            reply = {"id": req.get("id"), "status": "timeout", "equal": False}
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"id": None, "status": "error", "equal": False, "error": str(exc)}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
