"""Isolation machinery for running untrusted Python (the public API is :mod:`tts.verifiers.program`).

Three isolation levels, best first; :func:`sandbox_isolation` probes once which one works here:

- ``strong`` (root, the ``unshare`` binary of util-linux): ``unshare --pid --fork --net --mount
  --mount-proc --kill-child`` gives the program its own PID, network and mount namespaces. Inside,
  the *launcher* (``_launcher.py``'s code in a fresh ``python -I -S -B``, still root) remounts every mount
  read-only, hides ``/tmp``, ``/var/tmp``, ``/run``, ``/dev/shm`` and any directory the sandbox user
  cannot enter behind empty tmpfs mounts (re-binding the interpreter's prefix and the work folder
  inside them), mounts a size-limited tmpfs as the work folder, then forks the program, which sets
  rlimits, drops to a fresh unprivileged uid (one per run, so ``RLIMIT_NPROC`` counts only this
  run's processes and concurrent runs cannot signal each other), sets ``no_new_privs`` and runs the
  code. The launcher is PID 1 of the namespace: when it exits, or when the caller kills it, the
  kernel kills every process left in the namespace, so a fork bomb or a daemon never outlives the run.
- ``userns`` (no root, unprivileged user namespaces allowed): the same namespaces inside a user
  namespace; the program keeps the caller's uid outside but loses every capability before it runs.
- ``rlimits`` (neither): rlimits only, in a new session; logged as a warning, since the program can
  then use the network, write where the caller can and signal the caller's processes (as root
  without namespaces it even runs as root: the interpreter may lie where no other user can read).

Why the program runs inside the forked launcher instead of a second ``execve`` of the interpreter:
it saves one interpreter start-up (about a third of the per-program overhead), and the launcher has
already read the code, so the sandbox user never needs to read the host's temporary folder.

Per run: the caller writes the program and its files to a fresh host temporary folder (``HOSTDIR``,
0700), starts ``[unshare ...] python -I -S -B -c BOOTSTRAP LAUNCHER MODE HOSTDIR UID GID STATUS_FD
LIMITS [EXPOSE...]`` in a new session with a scrubbed environment, and reads stdout, stderr and the
launcher's status pipe (``start``, ``warn ...``, ``error ...``, ``exit N``, ``signal N``) with a cap;
on timeout or too much output it kills the process group (``unshare`` and the launcher, hence the
namespace) and waits until no process of the run's uid is left.

The sandbox does not rely on its caller to end it: the started process gets ``PR_SET_PDEATHSIG``
SIGKILL (``unshare --kill-child`` and the launcher pass a caller's death on to the program), the
launcher kills the program at its own wall deadline (``timeout`` + ``_STARTUP_LIMIT``) and the
folders of dead callers (``tts-sandbox-PID-*``) are removed by the next caller's first run.

The launcher's code lives in ``_launcher.py`` (it imports only ``os`` and ``sys``, so that it starts
fast); this file is the caller's side, which imports what it needs lazily.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from ._launcher import _within

if TYPE_CHECKING:
    import logging
    import subprocess
    from collections.abc import Callable, Mapping

__all__ = ["UID_RANGE", "RawRun", "execute", "sandbox_isolation"]

UID_BASE = 1_900_000_000
UID_SLOTS = 1 << 20
UID_RANGE = range(UID_BASE, UID_BASE + UID_SLOTS)
"""Unused uids the ``strong`` level runs programs as (one per run, above the ranges that systems
hand out to people, services and containers)."""

_LEVELS = ("strong", "userns", "rlimits")
_ENV_LEVEL = "TTS_SANDBOX_ISOLATION"
"""Environment variable that caps the level (e.g. ``rlimits`` to turn namespaces off)."""

_STARTUP_LIMIT = 30.0
"""Seconds the launcher may take to set the sandbox up before the run counts as a sandbox error."""

_BOOTSTRAP = (
    "import marshal, sys; ns = {'__name__': '_sandbox'}; "
    "exec(marshal.loads(open(sys.argv[1], 'rb').read()), ns); ns['_launch'](sys.argv[2:])"
)
"""How the launcher starts: it runs ``_launcher.py``'s code object, compiled once by the caller and
marshalled next to the program, so no run compiles it again (``.pyc`` files are not always written:
PYTHONDONTWRITEBYTECODE) and ``sys.path`` never holds ``verifiers/``, whose ``math.py`` would shadow
the standard library's ``math`` for the program."""

_DRAIN_SECONDS = 0.25
"""After the program has exited, how long to keep reading output still held by stray processes."""


# ==================================================================================================
# Caller side
# ==================================================================================================


class RawRun:
    """What one sandboxed run produced, before the public layer wraps it."""

    __slots__ = ("duration", "exit_code", "killed_reason", "level", "stderr", "stdout", "timed_out")

    def __init__(
        self,
        stdout: str,
        stderr: str,
        exit_code: int | None,
        timed_out: bool,
        killed_reason: str | None,
        level: str,
        duration: float,
    ) -> None:
        self.stdout, self.stderr, self.exit_code = stdout, stderr, exit_code
        self.timed_out, self.killed_reason = timed_out, killed_reason
        self.level, self.duration = level, duration


class _State:
    """Process-wide caches: the probed isolation level and the uids of runs in flight."""

    def __init__(self) -> None:
        import _thread  # built in; ``threading`` would cost the launcher milliseconds of start-up

        self.lock = _thread.allocate_lock()
        self.level: str | None = None
        self.uids: set[int] = set()
        self.launcher: bytes | None = None
        self.swept = False


_STATE = _State()


def _logger() -> logging.Logger:
    import logging

    return logging.getLogger("tts.verifiers.program")


def _launcher_code() -> bytes:
    """``_launcher.py`` compiled and marshalled, for the launcher (see ``_BOOTSTRAP``); cached."""
    if _STATE.launcher is None:
        import marshal

        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_launcher.py")
        with open(path, encoding="utf-8") as f:
            _STATE.launcher = marshal.dumps(compile(f.read(), path, "exec"))
    return _STATE.launcher


def _python() -> str:
    return os.path.realpath(sys.executable)


def _expose_paths() -> list[str]:
    """What the sandbox user must be able to read: the interpreter and its standard library."""
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix), os.path.dirname(_python())}
    # Keep only outermost paths (the binary's folder usually lies inside the prefix).
    return sorted(p for p in paths if not any(p != q and _within(p, q) for q in paths))


def _unshare_command(level: str) -> list[str]:
    import shutil

    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    user = ["--user", "--map-root-user"] if level == "userns" else []
    return [
        unshare,
        *user,
        "--pid",
        "--fork",
        "--kill-child",
        "--net",
        "--mount",
        "--mount-proc",
        "--propagation",
        "private",
    ]


def _count_user_tasks(uid: int) -> int:
    """Threads and processes of ``uid`` now (RLIMIT_NPROC counts them all, per real uid)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                continue
    return count


def _allocate_uid() -> int:
    import random

    with _STATE.lock:
        while True:
            uid = UID_BASE + random.randrange(UID_SLOTS)
            if uid not in _STATE.uids:
                _STATE.uids.add(uid)
                return uid


def _write_tree(hostdir: str, code: str, files: Mapping[str, str | bytes], stdin: str) -> None:
    work = os.path.join(hostdir, "work")
    os.mkdir(work, 0o700)
    with open(os.path.join(work, "main.py"), "w", encoding="utf-8") as f:
        f.write(code)
    for name, content in files.items():
        path = os.path.join(work, name)
        os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
    if stdin:
        with open(os.path.join(hostdir, "stdin"), "w", encoding="utf-8") as f:
            f.write(stdin)


_FOLDER_PREFIX = "tts-sandbox-"
"""Host temporary folders are ``tts-sandbox-PID-XXXX``, PID the caller's, so that a later caller can
remove those of a caller that died (kill -9) before its ``finally`` ran."""

_PR_SET_PDEATHSIG = 1


def _die_with_caller(caller: int) -> Callable[[], None]:
    """A ``preexec_fn``: the started process (``unshare`` or the launcher) gets SIGKILL when the
    caller dies (``unshare --kill-child`` passes it on to the namespace's PID 1, the launcher to the
    program); exits at once when the caller is already gone (it died between fork and prctl)."""

    import ctypes  # loaded here: the forked child must not import anything
    import signal

    prctl, sigkill = ctypes.CDLL(None, use_errno=True).prctl, int(signal.SIGKILL)

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0) != 0 or os.getppid() != caller:
            os._exit(125)

    return preexec


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_folders() -> None:
    """Remove the host folders of sandbox callers that died without cleaning up (once per process)."""
    if _STATE.swept:
        return
    _STATE.swept = True
    import shutil
    import tempfile

    top = tempfile.gettempdir()
    try:
        names = os.listdir(top)
    except OSError:
        return
    for name in names:
        pid = name[len(_FOLDER_PREFIX) :].split("-", 1)[0]
        if name.startswith(_FOLDER_PREFIX) and pid.isdigit() and not _pid_alive(int(pid)):
            path = os.path.join(top, name)
            try:
                if os.lstat(path).st_uid == os.geteuid():
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                continue


def _kill_group(pgid: int) -> None:
    import signal

    try:  # noqa: SIM105 - contextlib would be one more import on every run's path
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _await_uid_gone(uid: int, limit: float) -> None:
    """Wait until no process runs as ``uid`` (a killed namespace dies asynchronously: its init is
    reparented when we kill ``unshare``, and its members still free their memory)."""
    import time

    deadline = time.monotonic() + limit
    while True:
        alive = False
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    alive = os.stat(f"/proc/{entry}").st_uid == uid
                except OSError:
                    continue
                if alive:
                    break
        if not alive:
            return
        if time.monotonic() > deadline:
            _logger().error("sandbox: processes of uid %d still alive %.0f s after the kill", uid, limit)
            return
        time.sleep(0.01)


def _signal_reason(signum: int) -> str:
    import signal

    if signum == signal.SIGXCPU:
        return "cpu_time"
    try:
        return f"signal {signal.Signals(signum).name}"
    except ValueError:
        return f"signal {signum}"


def execute(
    code: str,
    *,
    timeout: float,
    memory_mb: int,
    max_output: int,
    stdin: str,
    files: Mapping[str, str | bytes],
    max_processes: int,
    max_file_mb: int,
    disk_mb: int,
    max_open_files: int,
    isolation: str | None,
) -> RawRun:
    """Run ``code`` once in the sandbox (arguments validated by the caller) and collect what it did."""
    import math
    import shutil
    import subprocess
    import tempfile
    import time

    level = isolation or sandbox_isolation()
    started = time.monotonic()
    _remove_stale_folders()
    hostdir = tempfile.mkdtemp(prefix=f"{_FOLDER_PREFIX}{os.getpid()}-")
    uid = gid = -1
    if level == "strong":
        uid = gid = _allocate_uid()
    nproc = max_processes
    if level != "strong":
        nproc += _count_user_tasks(os.getuid())
    cpu = max(1, math.ceil(timeout)) + 1
    wall = max(1, math.ceil(timeout + _STARTUP_LIMIT))  # the launcher's own deadline (watchdog)
    limits = [cpu, memory_mb << 20, max_file_mb << 20, max_open_files, nproc, wall, disk_mb]
    status_r, status_w = os.pipe()
    proc = None
    stdin_file = None
    try:
        _write_tree(hostdir, code, files, stdin)
        with open(os.path.join(hostdir, "launcher.marshal"), "wb") as f:
            f.write(_launcher_code())
        expose = _expose_paths() if level == "strong" else []
        launcher = [
            _python(),
            "-I",
            "-S",
            "-B",
            "-c",
            _BOOTSTRAP,
            os.path.join(hostdir, "launcher.marshal"),
            level,
            hostdir,
            str(uid),
            str(gid),
            str(status_w),
            ",".join(map(str, limits)),
            *expose,
        ]
        cmd = launcher if level == "rlimits" else [*_unshare_command(level), *launcher]
        stdin_file = open(os.path.join(hostdir, "stdin"), "rb") if stdin else subprocess.DEVNULL  # noqa: SIM115
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": os.path.join(hostdir, "work"),
            "TMPDIR": os.path.join(hostdir, "work"),
        }
        proc = subprocess.Popen(
            cmd,
            stdin=stdin_file,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(status_w,),
            close_fds=True,
            env=env,
            cwd=hostdir,
            start_new_session=True,
            preexec_fn=_die_with_caller(os.getpid()),
        )
        if stdin_file not in (None, subprocess.DEVNULL):
            stdin_file.close()  # type: ignore[union-attr]
            stdin_file = subprocess.DEVNULL
            os.unlink(os.path.join(hostdir, "stdin"))  # only the program's fd 0 holds it now
        os.close(status_w)
        status_w = -1
        assert proc.stdout is not None and proc.stderr is not None
        out = _collect_output(proc, status_r, timeout=timeout, max_output=max_output)
        _kill_group(proc.pid)  # strays of a "rlimits" run; the leader is not reaped yet, so no pid reuse
        proc.wait()
        if out[3] is not None and uid >= 0:
            _await_uid_gone(uid, _STARTUP_LIMIT)
    finally:
        if proc is not None and proc.returncode is None:
            _kill_group(proc.pid)
            proc.wait()
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        if stdin_file not in (None, subprocess.DEVNULL):
            stdin_file.close()  # type: ignore[union-attr,attr-defined]
        shutil.rmtree(hostdir, ignore_errors=True)
        with _STATE.lock:
            _STATE.uids.discard(uid)

    stdout, stderr, status_lines, reason = out
    exit_code: int | None = None
    for line in status_lines:
        word, _, rest = line.partition(" ")
        if word == "warn":
            _logger().warning("sandbox: %s", rest)
        elif word == "error":
            reason = reason or "sandbox_error"
            stderr = f"{stderr}\n{rest}".lstrip("\n")
            _logger().error("sandbox: %s", rest)
        elif word == "exit":
            exit_code = int(rest)
        elif word == "signal":
            exit_code = -int(rest)
            if reason is None:
                reason = _signal_reason(int(rest))
    if exit_code is None and reason is None:
        reason = "sandbox_error"
        stderr = f"{stderr}\nsandbox: the launcher died without reporting".lstrip("\n")
    if reason in ("timeout", "output_limit"):
        exit_code = None
    return RawRun(stdout, stderr, exit_code, reason == "timeout", reason, level, time.monotonic() - started)


def _collect_output(
    proc: subprocess.Popen[bytes], status_r: int, *, timeout: float, max_output: int
) -> tuple[str, str, list[str], str | None]:
    """Read stdout, stderr and the status pipe until all close, the deadline passes, or output
    exceeds ``max_output`` bytes on a stream; kill the sandbox on the last two. Returns stdout,
    stderr, the status lines and why the sandbox was killed (None if it was not)."""
    import selectors
    import time

    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray(), status_r: bytearray()}
    for fd in bufs:
        sel.register(fd, selectors.EVENT_READ)
    startup_deadline = time.monotonic() + _STARTUP_LIMIT
    deadline: float | None = None
    drain_deadline: float | None = None
    reason: str | None = None
    open_fds = set(bufs)
    try:
        while open_fds:
            now = time.monotonic()
            words = {line.split(b" ", 1)[0] for line in bytes(bufs[status_r]).split(b"\n")[:-1]}
            if deadline is None and words & {b"start", b"error"}:
                deadline = now + timeout
            if drain_deadline is None and words & {b"exit", b"signal", b"error"}:
                drain_deadline = now + _DRAIN_SECONDS
            limit = min(d for d in (deadline or startup_deadline, drain_deadline) if d is not None)
            if now >= limit:
                if drain_deadline is None:  # the program has not ended: it ran out of time
                    reason = "timeout" if deadline is not None else "sandbox_error"
                break
            for key, _ in sel.select(limit - now):
                fd = key.fd
                chunk = os.read(fd, 65536)
                if not chunk:
                    sel.unregister(fd)
                    open_fds.discard(fd)
                    continue
                bufs[fd] += chunk
                if fd != status_r and len(bufs[fd]) > max_output:
                    reason = "output_limit"
                    break
            if reason:
                break
    finally:
        sel.close()
    if reason is not None:
        _kill_group(proc.pid)
    if reason == "sandbox_error":
        bufs[status_r] += b"\nerror the sandbox did not start within %d s\n" % _STARTUP_LIMIT
    out = bytes(bufs[proc.stdout.fileno()][:max_output]).decode("utf-8", "replace")
    err = bytes(bufs[proc.stderr.fileno()][:max_output]).decode("utf-8", "replace")
    proc.stdout.close()
    proc.stderr.close()
    lines = [line for line in bufs[status_r].decode("utf-8", "replace").splitlines() if line]
    return out, err, lines, reason


def _probe(level: str) -> bool:
    try:
        run = execute(
            "print(6 * 7)",
            timeout=10.0,
            memory_mb=256,
            max_output=1000,
            stdin="",
            files={},
            max_processes=4,
            max_file_mb=1,
            disk_mb=1,
            max_open_files=32,
            isolation=level,
        )
    except OSError as exc:
        _logger().debug("sandbox level %s unavailable: %s", level, exc)
        return False
    if run.stdout.strip() != "42" or run.exit_code != 0:
        _logger().debug("sandbox level %s unavailable: exit %s, %s", level, run.exit_code, run.stderr[-500:])
        return False
    return True


def sandbox_isolation() -> str:
    """The isolation level programs run under here: ``strong``, ``userns`` or ``rlimits`` (see the
    module docstring). Probed once per process by running a tiny program at each level, best first;
    ``TTS_SANDBOX_ISOLATION`` caps it (e.g. ``rlimits`` on a machine where namespaces misbehave)."""
    with _STATE.lock:
        if _STATE.level is not None:
            return _STATE.level
    import shutil

    cap = os.environ.get(_ENV_LEVEL, "strong")
    if cap not in _LEVELS:
        raise ValueError(f"{_ENV_LEVEL} must be one of {', '.join(_LEVELS)}, got {cap!r}.")
    candidates = list(_LEVELS[_LEVELS.index(cap) :])
    if shutil.which("unshare") is None:
        candidates = ["rlimits"]
    if os.geteuid() != 0 and "strong" in candidates:
        candidates.remove("strong")
    found = next((lv for lv in candidates[:-1] if _probe(lv)), "rlimits")
    if found != "strong":
        _logger().warning(
            "program sandbox: isolation level %r (%s); run as root with util-linux `unshare` for the "
            "strong level (PID/network/mount namespaces, a separate uid).",
            found,
            "namespaces, own uid kept"
            if found == "userns"
            else "rlimits only: programs can use the network, write files and signal your processes",
        )
    with _STATE.lock:
        _STATE.level = found
    return found
