"""The launcher of a sandboxed run: the code that sets the sandbox up inside its namespaces and
forks the program (see :mod:`tts.verifiers._sandbox`, the caller's side, for the whole design).

It runs in a fresh ``python -I -S -B`` as ``_launch(MODE HOSTDIR UID GID STATUS_FD LIMITS
EXPOSE...)``: the caller compiles this file once and marshals it next to the program. It imports
only ``os`` and ``sys``, so that it starts fast, and nothing from ``tts``.
"""

from __future__ import annotations

import os
import sys

_HIDDEN_DIRS = ("/tmp", "/var/tmp", "/run", "/dev/shm")
"""World-writable or socket-holding folders replaced by empty read-only tmpfs mounts in the sandbox
(an X11 or D-Bus socket there would reach outside despite the network namespace)."""

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC = 32, 4096, 16384
_MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME, _MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
_MOUNT_FLAGS = {
    "ro": _MS_RDONLY,
    "nosuid": _MS_NOSUID,
    "nodev": _MS_NODEV,
    "noexec": _MS_NOEXEC,
    "noatime": _MS_NOATIME,
    "nodiratime": _MS_NODIRATIME,
    "relatime": _MS_RELATIME,
    "strictatime": _MS_STRICTATIME,
}
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS, _PR_CAPBSET_DROP = 1, 38, 24
_SIGKILL = 9


class _Libc:
    """The few libc calls Python 3.11's ``os`` lacks (mount, prctl, capset), through ctypes."""

    def __init__(self) -> None:
        import ctypes

        self._ctypes = ctypes
        self.lib = ctypes.CDLL(None, use_errno=True)

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            err = self._ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
        def enc(s: str | None) -> bytes | None:
            return None if s is None else os.fsencode(s)

        c = self._ctypes
        self._check(
            self.lib.mount(enc(source), enc(target), enc(fstype), c.c_ulong(flags), enc(data)), f"mount {target}"
        )

    def prctl(self, option: int, arg: int = 0) -> None:
        c = self._ctypes
        self._check(
            self.lib.prctl(c.c_int(option), c.c_ulong(arg), c.c_ulong(0), c.c_ulong(0), c.c_ulong(0)), f"prctl {option}"
        )

    def drop_capabilities(self) -> None:
        """Empty the bounding set, then the effective, permitted and inheritable sets."""
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                last = int(f.read())
        except OSError:
            last = 63
        for cap in range(last + 1):
            self.lib.prctl(_PR_CAPBSET_DROP, self._ctypes.c_ulong(cap), 0, 0, 0)
        header = (self._ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
        data = (self._ctypes.c_uint32 * 6)()
        self._check(self.lib.capset(header, data), "capset")


def _unescape(field: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _remount_all_readonly(libc: _Libc, warnings: list[str]) -> None:
    """Make every mount of this (private) mount namespace read-only, keeping its other flags."""
    with open("/proc/self/mountinfo") as f:
        entries = [line.split() for line in f]
    for parts in entries:
        target = _unescape(parts[4])
        flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY
        for opt in parts[5].split(","):
            flags |= _MOUNT_FLAGS.get(opt, 0)
        try:
            libc.mount(None, target, None, flags)
        except OSError as exc:
            if os.path.exists(target):  # an over-mounted or vanished path cannot matter
                warnings.append(f"could not make {target} read-only: {exc.strerror}")


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _blocked_ancestor(path: str, uid: int) -> str | None:
    """The topmost ancestor of ``path`` that ``uid`` (not owner, no groups) cannot enter."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        ancestor = "/" + "/".join(parts[:i])
        st = os.stat(ancestor)
        if not st.st_mode & 0o001 and st.st_uid != uid:
            return ancestor
    return None


def _collect(workdir: str) -> list[tuple[str, bytes | None]]:
    """Every entry under ``workdir`` as (relative path, content or None for a folder), parents first."""
    out: list[tuple[str, bytes | None]] = []
    for root, dirs, files in os.walk(workdir):
        rel = os.path.relpath(root, workdir)
        for d in sorted(dirs):
            out.append((os.path.normpath(os.path.join(rel, d)), None))
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as f:
                out.append((os.path.normpath(os.path.join(rel, name)), f.read()))
    return out


def _build_mounts(
    libc: _Libc, hostdir: str, uid: int, gid: int, disk_mb: int, expose: list[str], warnings: list[str]
) -> None:
    """Inside a fresh mount namespace: read-only everything, hide shared folders and folders the
    sandbox user cannot enter (re-binding what it needs), and a private tmpfs as the work folder."""
    workdir = os.path.join(hostdir, "work")
    files = _collect(workdir)
    fds = {p: os.open(p, os.O_PATH) for p in expose}
    _remount_all_readonly(libc, warnings)

    tops = {d for d in _HIDDEN_DIRS if os.path.isdir(d) and not os.path.islink(d)}
    if uid >= 0:
        for p in [*expose, hostdir]:
            blocked = _blocked_ancestor(p, uid)
            if blocked:
                tops.add(blocked)
    # Hide the outermost folders only; never hide a folder the interpreter lives in.
    tops = {t for t in tops if not any(_within(t, o) and t != o for o in tops)}
    tops = {t for t in tops if not any(_within(t, p) for p in expose)}
    for top in sorted(tops):
        libc.mount("tts-sandbox", top, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=64k,nr_inodes=512,mode=0755")
        for p in expose:
            if _within(p, top) and p != top:
                os.makedirs(p, 0o755, exist_ok=True)
                libc.mount(f"/proc/self/fd/{fds[p]}", p, None, _MS_BIND | _MS_REC)
                libc.mount(None, p, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
        if _within(hostdir, top):
            os.makedirs(hostdir, 0o755, exist_ok=True)
        libc.mount(None, top, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    for fd in fds.values():
        os.close(fd)

    owner = f",uid={uid},gid={gid}" if uid >= 0 else ""
    libc.mount("tts-sandbox", hostdir, "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={disk_mb}m,nr_inodes=4096,mode=0755")
    os.mkdir(workdir, 0o700)
    made = [workdir]
    for rel, content in files:
        path = os.path.join(workdir, rel)
        if content is None:
            os.mkdir(path, 0o700)
        else:
            with open(path, "wb") as f:
                f.write(content)
        made.append(path)
    if owner:
        for path in made:
            os.chown(path, uid, gid)


def _confine(mode: str, libc: _Libc | None, uid: int, gid: int, limits: list[int]) -> None:
    """In the program's process: rlimits, then the unprivileged identity, then no_new_privs."""
    import resource

    cpu, memory, fsize, nofile, nproc, _wall = limits
    for res, value in (
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_AS, memory),
        (resource.RLIMIT_DATA, memory),
        (resource.RLIMIT_FSIZE, fsize),
        (resource.RLIMIT_NOFILE, nofile),
        (resource.RLIMIT_NPROC, nproc),
    ):
        resource.setrlimit(res, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU first, SIGKILL a second later
    if libc is None:
        libc = _Libc()
    if mode == "strong":
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)  # clears every capability: the uid is not 0
    elif mode == "userns":
        libc.drop_capabilities()
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1)


def _run_user_code(source: bytes, path: str) -> None:
    """Run the program as ``__main__`` in this process; never returns (exits like ``python main.py``)."""
    import builtins

    sys.argv = [path]
    if not hasattr(builtins, "exit"):  # ``-S`` skips site.py, which defines exit() and quit()

        def _exit(code: object = None) -> None:
            raise SystemExit(code)

        builtins.exit = builtins.quit = _exit  # type: ignore[assignment]
    main = type(sys)("__main__")
    main.__file__ = path
    main.__builtins__ = __builtins__  # type: ignore[attr-defined]
    sys.modules["__main__"] = main
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        exec(compile(source, path, "exec"), main.__dict__)
    except SystemExit:
        raise
    except BaseException:
        kind, value, tb = sys.exc_info()
        assert kind is not None and value is not None and tb is not None
        value.__traceback__ = tb.tb_next  # hide this frame: the traceback starts in the program
        sys.excepthook(kind, value, value.__traceback__)
        raise SystemExit(1) from None
    raise SystemExit(0)


def _watchdog(seconds: int, pid: int) -> None:
    """The sandbox's own deadline, whatever happens to the caller: at ``seconds`` of wall time,
    SIGKILL the program and its process group (the namespace dies with its PID 1 anyway)."""
    import signal

    def expire(signum: int, frame: object) -> None:
        for kill in (lambda: os.kill(pid, _SIGKILL), lambda: os.killpg(os.getpgid(0), _SIGKILL)):
            try:  # noqa: SIM105 - contextlib would be one more import in the launcher
                kill()
            except OSError:
                pass
        os._exit(124)

    signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)


def _launch(argv: list[str]) -> int:
    """The launcher's main: set the sandbox up, fork the program, wait, report on the status fd."""
    mode, hostdir, uid, gid, status_fd = argv[0], argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    limits = [int(x) for x in argv[5].split(",")]
    disk_mb, expose = limits.pop(), argv[6:]

    def report(line: str) -> None:
        os.write(status_fd, (line.replace("\n", " ") + "\n").encode())

    warnings: list[str] = []
    libc = None
    try:
        with open(os.path.join(hostdir, "work", "main.py"), "rb") as f:
            source = f.read()
        if mode != "rlimits":
            libc = _Libc()
            _build_mounts(libc, hostdir, uid, gid, disk_mb, expose, warnings)
    except Exception as exc:
        report(f"error sandbox set-up failed: {type(exc).__name__}: {exc}")
        return 125
    for w in warnings:
        report(f"warn {w}")
    workdir = os.path.join(hostdir, "work")
    report("start")
    launcher = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            if libc is None:
                libc = _Libc()
            libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL)  # the launcher's death (a kill -9 upstream) ends it
            if os.getppid() != launcher:
                os._exit(125)
            _confine(mode, libc, uid, gid, limits)
            os.chdir(workdir)
        except BaseException as exc:
            report(f"error could not confine the program: {type(exc).__name__}: {exc}")
            os._exit(125)
        os.close(status_fd)  # the program must not forge the launcher's report
        _run_user_code(source, os.path.join(workdir, "main.py"))
    null = os.open(os.devnull, os.O_RDONLY)  # stdin is the program's alone (it may hold a secret)
    os.dup2(null, 0)
    os.close(null)
    _watchdog(limits[-1], pid)
    while True:  # as PID 1 of the namespace, also reap orphans until the program itself exits
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        if done == pid:
            break
    if os.WIFSIGNALED(status):
        report(f"signal {os.WTERMSIG(status)}")
    else:
        report(f"exit {os.WEXITSTATUS(status)}")
    os._exit(0)  # nothing left to flush or finalize; skipping interpreter teardown saves milliseconds
