"""The program sandbox: normal runs (stdout, exit codes, timeouts, stdin, files, output cap) at every
available isolation level, and hostile programs at the strong level, each checked for a failed score
AND for the host's state afterwards (parent alive, no stray process, nothing written, no secret out,
memory capped, no connection made).

Bounded in time: every program has a limit of at most 2 s, and the whole file takes ~15 s on 2 cores.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tts.errors import ConfigError
from tts.types import Candidate, Problem, Score
from tts.verifiers import _sandbox
from tts.verifiers.program import ProgramVerifier, arun_program, run_program, sandbox_isolation

LEVEL = sandbox_isolation()
REPO = Path(__file__).resolve().parents[1]
LEVELS = [LEVEL] if LEVEL == "rlimits" else [LEVEL, "rlimits"]  # the fallback must work everywhere

strong_only = pytest.mark.skipif(
    LEVEL != "strong", reason="hostile programs are only contained at the strong level (root + unshare)"
)


def sandbox_processes() -> list[int]:
    """Processes running as any sandbox uid, anywhere on the host."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid in _sandbox.UID_RANGE:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def my_children() -> set[int]:
    """Live (non-zombie) child processes of this test process."""
    kids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid() and fields[0] != "Z":
                kids.add(int(entry))
    return kids


async def verdict(code: str, timeout: float = 2.0, memory_mb: int = 256) -> Score:
    """The score ProgramVerifier (no tests: passes iff the program exits 0) gives ``code``."""
    verifier = ProgramVerifier(timeout=timeout, memory_mb=memory_mb)
    [score] = await verifier.score(Problem("hostile", "run it"), [Candidate(text=code, answer=None)])
    return score


@pytest.fixture
def host_guard():
    """Checks, after a hostile run, that nothing of it is left and this process is intact."""
    before = my_children()
    yield
    assert sandbox_processes() == [], "a sandboxed process outlived its run"
    assert my_children() <= before, "the run left a child process behind"
    assert subprocess.run(["true"], timeout=10).returncode == 0  # the host can still start processes


# --------------------------------------------------------------------------------------------------
# Isolation level
# --------------------------------------------------------------------------------------------------


def test_strong_isolation_is_active_in_ci_and_as_root() -> None:
    if os.environ.get("CI") or os.geteuid() == 0:
        assert LEVEL == "strong", "CI runs as root with util-linux unshare: the sandbox must not downgrade"
    else:
        assert LEVEL in ("userns", "rlimits")
    assert run_program("print('hi')").isolation == LEVEL


def test_a_capped_level_falls_back_with_a_warning(monkeypatch, caplog) -> None:
    saved = _sandbox._STATE.level
    monkeypatch.setenv("TTS_SANDBOX_ISOLATION", "rlimits")
    _sandbox._STATE.level = None
    try:
        with caplog.at_level(logging.WARNING, logger="tts.verifiers.program"):
            assert sandbox_isolation() == "rlimits"
        assert any("rlimits only" in r.getMessage() for r in caplog.records)
        assert run_program("print(2 + 2)").stdout == "4\n"
    finally:
        _sandbox._STATE.level = saved


def test_userns_level_runs_programs_where_available() -> None:
    if not _sandbox._probe("userns"):
        pytest.skip("unprivileged user namespaces are not available here")
    result = run_program("import os\nprint(os.getpid())", isolation="userns")
    assert result.ok and result.stdout == "2\n"  # PID 1 is the launcher of the new PID namespace


# --------------------------------------------------------------------------------------------------
# Normal programs, at every level available
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_stdout_stderr_and_exit_codes(level) -> None:
    ok = run_program("import sys\nprint('out')\nprint('err', file=sys.stderr)", isolation=level)
    assert (ok.ok, ok.stdout, ok.stderr, ok.exit_code, ok.killed_reason) == (True, "out\n", "err\n", 0, None)
    assert ok.isolation == level

    exited = run_program("import sys\nprint('partial')\nsys.exit(3)", isolation=level)
    assert (exited.ok, exited.exit_code, exited.stdout, exited.timed_out) == (False, 3, "partial\n", False)

    crashed = run_program("def f():\n    return 1 / 0\nf()", isolation=level)
    assert not crashed.ok and crashed.exit_code == 1
    assert "ZeroDivisionError" in crashed.stderr and "line 2, in f" in crashed.stderr
    assert "_sandbox" not in crashed.stderr  # the traceback starts in the program

    bad = run_program("def f(:\n", isolation=level)
    assert bad.exit_code == 1 and "SyntaxError" in bad.stderr


@pytest.mark.parametrize("level", LEVELS)
def test_timeout_is_flagged(level) -> None:
    result = run_program("print('started', flush=True)\nwhile True:\n    pass", timeout=1.0, isolation=level)
    assert result.timed_out and result.killed_reason == "timeout"
    assert not result.ok and result.exit_code is None
    assert result.stdout == "started\n"  # output before the kill is kept
    assert sandbox_processes() == []


@pytest.mark.parametrize("level", LEVELS)
def test_stdin_and_files(level) -> None:
    code = (
        "import os, sys\nprint(sys.stdin.read().upper())\nprint(open('data/in.txt').read())\n"
        "open('out.txt', 'w').write('x' * 10)\n"
        "print(sorted(os.listdir('.')), os.path.getsize('out.txt'))\n"
        "print(os.getcwd() == os.environ['HOME'] == os.environ['TMPDIR'])"
    )
    result = run_program(code, stdin="abc\ndef", files={"data/in.txt": "given"}, isolation=level)
    assert result.ok, result.stderr
    assert result.stdout == "ABC\nDEF\ngiven\n['data', 'main.py', 'out.txt'] 10\nTrue\n"
    assert run_program("print(input())", isolation=level).exit_code == 1  # no stdin: EOF at once


@pytest.mark.parametrize("level", LEVELS)
def test_output_is_capped_and_the_program_killed(level) -> None:
    result = run_program("while True:\n    print('x' * 999)", max_output=5000, isolation=level)
    assert result.killed_reason == "output_limit" and not result.ok and not result.timed_out
    assert len(result.stdout) == 5000
    assert sandbox_processes() == []


@pytest.mark.parametrize("level", LEVELS)
def test_environment_is_scrubbed(level, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-programs")
    result = run_program("import os\nprint(sorted(os.environ))", isolation=level)
    assert result.stdout == "['HOME', 'LANG', 'PATH', 'TMPDIR']\n"


def test_file_size_limit() -> None:
    result = run_program("open('big', 'wb').write(b'x' * (3 << 20))", max_file_mb=1)
    assert not result.ok and ("File too large" in result.stderr or result.killed_reason == "signal SIGXFSZ")


def test_invalid_arguments_are_rejected(monkeypatch) -> None:
    with pytest.raises(ConfigError, match="timeout must be > 0"):
        run_program("print(1)", timeout=0)
    with pytest.raises(ConfigError, match="memory_mb must be >= 64"):
        run_program("print(1)", memory_mb=8)
    for name in ("../escape", "/etc/passwd", "a//b", "main.py"):
        with pytest.raises(ConfigError, match="files"):
            run_program("print(1)", files={name: "x"})
    with pytest.raises(ConfigError, match="isolation must be"):
        run_program("print(1)", isolation="none")
    saved = _sandbox._STATE.level
    monkeypatch.setenv("TTS_SANDBOX_ISOLATION", "weak")
    _sandbox._STATE.level = None
    try:
        with pytest.raises(ConfigError, match="TTS_SANDBOX_ISOLATION must be one of"):
            sandbox_isolation()
    finally:
        _sandbox._STATE.level = saved


async def test_arun_program_leaves_the_event_loop_free() -> None:
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    programs = [f"import time\ntime.sleep(0.3)\nprint({i})" for i in range(3)]
    results = await asyncio.gather(*(arun_program(code) for code in programs))
    done = True
    await task
    assert [r.stdout for r in results] == ["0\n", "1\n", "2\n"]
    assert ticks > 3  # the loop kept running while the programs did


# --------------------------------------------------------------------------------------------------
# Hostile programs (strong level): a failed score, and the host untouched
# --------------------------------------------------------------------------------------------------


@strong_only
async def test_fork_bomb_is_contained(host_guard) -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    score = await verdict(code, timeout=2.0)
    assert score.passed is False and score.value == 0.0
    assert "timed out" in score.feedback


@strong_only
async def test_fork_bomb_that_gives_up_fails() -> None:
    score = await verdict("import os\nwhile True:\n    os.fork()\n", timeout=2.0)
    assert score.passed is False
    assert sandbox_processes() == []


@strong_only
async def test_infinite_loop_times_out(host_guard) -> None:
    score = await verdict("while True:\n    pass", timeout=1.0)
    assert score.passed is False and "timed out after 1 s" in score.feedback


@strong_only
async def test_huge_allocations_hit_the_memory_limit(host_guard) -> None:
    score = await verdict("x = bytearray(64 * 2**30)", memory_mb=128)
    assert score.passed is False and "MemoryError" in score.feedback
    # Growing step by step: the limit binds near memory_mb, not at the host's memory.
    grow = (
        "chunks = []\ntry:\n    while True:\n        chunks.append(bytearray(2**20))\n"
        "except MemoryError:\n    print('reached', len(chunks))\n    raise\n"
    )
    result = run_program(grow, memory_mb=128, timeout=2.0)
    assert result.exit_code == 1 and "MemoryError" in result.stderr
    assert 10 < int(result.stdout.split()[1]) < 128


@strong_only
async def test_filling_the_disk_stops_at_the_work_folder_size(host_guard) -> None:
    code = "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'x' * (1 << 20))\n    i += 1\n"
    result = run_program(code, disk_mb=4, timeout=2.0)
    assert not result.ok and result.exit_code == 1 and "No space left on device" in result.stderr


@strong_only
async def test_sockets_cannot_reach_the_host(host_guard) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n"
        score = await verdict(code)
        assert score.passed is False and "Network is unreachable" in score.feedback
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected


@strong_only
async def test_root_only_files_cannot_be_read(host_guard) -> None:
    secret = "s3cret-" + secrets.token_hex(8)
    path = REPO / "tests" / f".sandbox-secret-{secrets.token_hex(4)}"
    path.write_text(secret)
    path.chmod(0o600)
    try:
        score = await verdict(f"print(open({str(path)!r}).read())")
        assert score.passed is False and secret not in score.feedback
        # Denied, or not even visible where the checkout lies under a folder the sandbox hides.
        assert "PermissionError" in score.feedback or "FileNotFoundError" in score.feedback
        if Path("/etc/shadow").exists():  # root-only and visible: the permission check itself
            shadow = await verdict("print(open('/etc/shadow').read())")
            assert shadow.passed is False and "PermissionError" in shadow.feedback
            assert "root:" not in shadow.feedback
    finally:
        path.unlink()


@strong_only
async def test_parent_environment_secrets_do_not_leak(host_guard, monkeypatch) -> None:
    secret = "sk-" + secrets.token_hex(12)
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    code = (
        "import os\nprint(dict(os.environ))\nfor pid in os.listdir('/proc'):\n    try:\n"
        "        print(open(f'/proc/{pid}/environ', 'rb').read())\n    except OSError:\n        pass\n"
        "print(os.environ['OPENAI_API_KEY'])\n"
    )
    result = run_program(code)
    assert secret not in result.stdout and secret not in result.stderr
    score = await verdict(code)
    assert score.passed is False and "KeyError" in score.feedback and secret not in score.feedback


@strong_only
@pytest.mark.parametrize("where", ["/tmp", "repo", "home", "/var/tmp", "/dev/shm"])
async def test_writes_outside_the_work_folder_fail(where, host_guard) -> None:
    folder = {"repo": REPO, "home": Path.home()}.get(where, Path(where))
    target = folder / f"sandbox-escape-{secrets.token_hex(4)}"
    score = await verdict(f"open({str(target)!r}, 'w').write('pwned')")
    assert score.passed is False
    assert "Read-only file system" in score.feedback or "No such file" in score.feedback
    assert not target.exists()


@strong_only
@pytest.mark.parametrize(
    "attack",
    [
        "os.kill(os.getppid(), signal.SIGKILL)",
        "os.killpg(0, signal.SIGKILL)",
        "os.kill(-1, signal.SIGKILL)",
        "os.kill(PARENT, signal.SIGKILL)",
        "os.killpg(os.getpgid(PARENT), signal.SIGKILL)",
    ],
)
async def test_the_parent_cannot_be_signalled(attack, host_guard) -> None:
    sentinel = subprocess.Popen(["sleep", "30"])  # a host process the program might hit instead
    try:
        code = f"import os, signal\n{attack.replace('PARENT', str(os.getpid()))}\nprint('survived')\n"
        score = await verdict(code)
        assert score.passed is False  # the call fails (EPERM, ESRCH) or kills only the program itself
        assert sentinel.poll() is None
        os.kill(os.getpid(), 0)  # this process is alive (it would not be running this line otherwise)
    finally:
        sentinel.send_signal(signal.SIGKILL)
        sentinel.wait()


@strong_only
async def test_daemons_do_not_outlive_the_run(host_guard) -> None:
    code = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        time.sleep(60)\n    os._exit(0)\nprint('detached')\n"
    )
    result = run_program(code)
    assert result.ok and result.stdout == "detached\n"
    # host_guard: the sleeping grandchild died with the namespace


@strong_only
async def test_the_sandbox_cannot_undo_its_mounts(host_guard) -> None:
    code = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.umount2(b'/tmp', 2) != 0 and libc.mount(None, b'/', None, 32 | 4096, None) != 0\n"
        "import os\nprint(' '.join(os.listdir('/tmp')))\n"
    )
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="host-only-") as host_file:
        result = run_program(code)
        assert result.ok, result.stderr
        # The sandbox sees an empty /tmp, except the path to its own work folder.
        assert os.path.basename(host_file.name) not in result.stdout
        assert all(name.startswith("tts-sandbox-") for name in result.stdout.split())


def _processes_with(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker in cmdline and state != "Z":
                found.append(int(entry))
    return found


@pytest.mark.parametrize("level", LEVELS)
def test_the_program_dies_with_its_caller_and_its_folder_goes(level) -> None:
    import sys
    import time

    caller = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tts.verifiers.program import run_program\n"
            f"run_program('import time\\ntime.sleep(600)', timeout=60.0, isolation={level!r})\n",
        ]
    )
    marker = f"tts-sandbox-{caller.pid}-"
    try:
        deadline = time.monotonic() + 20
        while not _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_with(marker), "the sandboxed program never started"
        time.sleep(1.0)
    finally:
        caller.send_signal(signal.SIGKILL)
        caller.wait()
    deadline = time.monotonic() + 5
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_with(marker) == [], "the sandboxed program outlived its killed caller"
    # The next caller removes the folder the dead one left.
    next_caller = [sys.executable, "-c", "from tts.verifiers.program import run_program\nrun_program('pass')"]
    assert subprocess.run(next_caller, timeout=60).returncode == 0
    assert not [n for n in os.listdir(tempfile.gettempdir()) if n.startswith(marker)]


def test_the_launcher_enforces_its_own_deadline(monkeypatch) -> None:
    """Even if the caller never kills it, the launcher kills the program at its own wall deadline."""
    collect = _sandbox._collect_output
    monkeypatch.setattr(_sandbox, "_STARTUP_LIMIT", 2.0)  # the launcher's deadline: 1 + 2 s
    monkeypatch.setattr(_sandbox, "_collect_output", lambda *a, **kw: collect(*a, **{**kw, "timeout": 120.0}))
    result = run_program("import time\ntime.sleep(30)", timeout=1.0, isolation="rlimits")
    assert result.duration < 10 and not result.timed_out  # the launcher, not the caller, ended it
