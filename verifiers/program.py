"""Run code a model wrote and judge it: program-of-thought, unit tests for code answers, Game of 24.

- :func:`run_program` / :func:`arun_program` run Python source in a sandbox (a separate process with
  CPU-time, wall-time, memory, process-count, file-size and output limits; no network; no writes
  outside its own temporary folder; a scrubbed environment) and return a :class:`ProgramResult`.
  :func:`sandbox_isolation` tells which isolation level is active (``strong`` where root and
  util-linux ``unshare`` are available; see :mod:`tts.verifiers._sandbox` for the machinery).
- :class:`ProgramVerifier` runs a candidate's code (its last fenced ``python`` block, else the whole
  reply) against unit tests (assert snippets, HumanEval-style ``check``, or stdin/stdout cases).
- :class:`Game24Verifier` checks a Game of 24 expression without running any code: parsed with
  :mod:`ast`, only numbers, ``+ - * /`` and parentheses allowed, evaluated exactly with
  :class:`fractions.Fraction`.

The program runs with the interpreter's standard library only (``python -I -S``: no site-packages).
"""

from __future__ import annotations

import ast
import asyncio
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, cast

from pydantic import Field

from tts.errors import ConfigError, parse_options
from tts.types import Candidate, Problem, Score

from . import _sandbox
from .base import VerifierCost, VerifierOptions, verifier_options

if TYPE_CHECKING:
    from tts.context import Context

__all__ = [
    "Game24Options",
    "Game24Verifier",
    "IsolationLevel",
    "ProgramOptions",
    "ProgramResult",
    "ProgramVerifier",
    "SandboxLimits",
    "arun_program",
    "check_game24",
    "code_blocks",
    "extract_code",
    "extract_expression",
    "game24_numbers",
    "run_program",
    "sandbox_isolation",
]

IsolationLevel = Literal["strong", "userns", "rlimits"]
"""How strongly programs are isolated: ``strong`` (PID, network and mount namespaces, a separate
unprivileged uid, rlimits), ``userns`` (the same namespaces in an unprivileged user namespace, the
caller's uid kept outside, no capabilities), ``rlimits`` (resource limits only: a fallback that is
logged as a warning)."""


@dataclass(frozen=True, slots=True)
class ProgramResult:
    """What a sandboxed program did.

    ``ok`` is true when it exited with status 0 by itself. ``exit_code`` is its exit status, minus
    the signal number when a signal ended it, None when the sandbox killed it. ``killed_reason``
    says why it did not end by itself: ``timeout`` (wall time; ``timed_out`` is then true),
    ``output_limit``, ``cpu_time``, ``signal NAME`` or ``sandbox_error`` (the sandbox itself failed).
    """

    ok: bool
    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool
    killed_reason: str | None
    isolation: str = ""
    duration: float = 0.0


def sandbox_isolation() -> IsolationLevel:
    """The isolation level programs get on this machine (probed once per process; see
    :data:`IsolationLevel`). ``TTS_SANDBOX_ISOLATION=rlimits`` caps it."""
    try:
        return cast(IsolationLevel, _sandbox.sandbox_isolation())
    except ValueError as exc:  # a bad TTS_SANDBOX_ISOLATION
        raise ConfigError(str(exc)) from None


class SandboxLimits(VerifierOptions):
    """What a sandboxed program may use (the limits of :func:`run_program`)."""

    timeout: float = Field(default=5.0, gt=0)
    """Seconds of wall time (and about as much CPU time)."""
    memory_mb: int = Field(default=512, ge=64)
    """Address space per process, MB (the interpreter alone needs ~30 MB)."""
    max_output: int = Field(default=64_000, ge=0)
    """Characters on each of stdout and stderr; more kills the program."""
    max_processes: int = Field(default=8, ge=1)
    """Processes and threads."""
    max_file_mb: int = Field(default=16, ge=1)
    """Size of one written file, MB."""
    disk_mb: int = Field(default=64, ge=1)
    """Size of the work folder, MB."""
    max_open_files: int = Field(default=64, ge=16)
    isolation: IsolationLevel | None = None
    """Lower the isolation level (tests); None: the best this machine supports."""


def _check_files(files: Mapping[str, str | bytes]) -> None:
    for name in files:
        parts = name.split("/")
        if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ConfigError(
                f"files: {name!r} must be a relative path without '.', '..' or empty parts, e.g. 'data/input.txt'."
            )
        if name == "main.py":
            raise ConfigError("files: 'main.py' is the program itself; give the file another name.")


def run_program(
    code: str, *, stdin: str = "", files: dict[str, str] | None = None, limits: SandboxLimits | None = None, **kw: Any
) -> ProgramResult:
    """Run Python source ``code`` in the sandbox and return what it printed and how it ended.

    ``limits`` (or its fields as keyword arguments: ``timeout=2.0, memory_mb=256``) bound what the
    program may use (see :class:`SandboxLimits`); its work folder (its current directory, also
    ``HOME`` and ``TMPDIR``) gets ``files`` (relative path -> text) first; ``stdin`` is its
    standard input. Blocks until the program ends; :func:`arun_program` is the asyncio form.
    """
    if limits is None or kw:
        limits = parse_options(SandboxLimits, {**(limits.model_dump() if limits else {}), **kw}, where="run_program")
    files = dict(files or {})
    _check_files(files)
    isolation = limits.isolation or sandbox_isolation()
    raw = _sandbox.execute(
        code, stdin=stdin, files=files, isolation=isolation, **limits.model_dump(exclude={"isolation"})
    )
    return ProgramResult(
        ok=raw.exit_code == 0 and raw.killed_reason is None,
        stdout=raw.stdout,
        stderr=raw.stderr,
        exit_code=raw.exit_code,
        timed_out=raw.timed_out,
        killed_reason=raw.killed_reason,
        isolation=raw.level,
        duration=raw.duration,
    )


async def arun_program(code: str, **kwargs: Any) -> ProgramResult:
    """:func:`run_program` in a worker thread, so the event loop keeps running meanwhile. Takes the
    same keyword arguments. Cancelling the awaiting task does not stop the program early; it still
    ends within its own time limit."""
    return await asyncio.to_thread(run_program, code, **kwargs)


# --------------------------------------------------------------------------------------------------
# Code answers
# --------------------------------------------------------------------------------------------------

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = ("python", "py", "python3")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of a reply as (language tag in lower case, body), in order; an
    unterminated block runs to the end of the text (generation stopped at max_tokens)."""
    return [(lang.lower(), body) for lang, body in _FENCE_RE.findall(text)]


def extract_code(text: str) -> str:
    """The code in a reply: the last fenced block tagged python, else the last untagged fenced
    block, else the whole text."""
    blocks = code_blocks(text)
    tagged = [body for lang, body in blocks if lang in _PYTHON_TAGS]
    untagged = [body for lang, body in blocks if not lang]
    chosen = tagged or untagged
    return chosen[-1].strip("\n") + "\n" if chosen else text


_HARNESS = """\
import ctypes, os, subprocess, sys

if ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE 0: no /proc/PID/mem, fd or ptrace
    sys.exit("harness: could not make itself undumpable")
nonce = sys.stdin.readline().strip()
sys.stdin.close()
count = len([name for name in os.listdir(".") if name.startswith("test_")])
with open("solution.py", encoding="utf-8") as f:
    solution = f.read()
tests = []
for i in range(count):
    with open("test_%d.py" % i, encoding="utf-8") as f:
        tests.append(f.read())
with open("child.py", encoding="utf-8") as f:
    child = f.read()
passed = 0
for i, test in enumerate(tests):
    import marshal
    run = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", child],
        input=marshal.dumps((solution, test, i)),
        stdout=subprocess.DEVNULL,
        close_fds=True,
    )
    passed += run.returncode == 0
sys.stdout.write("\\n%s %d\\n" % (nonce, passed))
sys.stdout.flush()
"""
"""The unit-test harness, the sandboxed program's ``main.py``: it holds a random nonce (from stdin,
never on disk) and runs each test in a fresh interpreter (``_CHILD``) that never sees it; a test
passes iff its child ends normally with status 0. The harness is undumpable, so a child (same uid)
cannot read its memory or file descriptors; it prints the count after the nonce."""

_CHILD = """\
import sys


def _tts_child():
    import _imp, marshal, os, posix

    solution, test, index = marshal.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    for name in sys.builtin_module_names:  # imported now: create_builtin goes (it re-creates posix)
        __import__(name)

    def refuse(*args, **kwargs):
        raise ImportError("re-creating built-in modules is not allowed in a unit test")

    def failed_exit(code=0):
        posix.kill(posix.getpid(), 9)

    _imp.create_builtin = refuse
    posix._exit = os._exit = failed_exit  # an early exit must not look like a pass
    blocked = (
        "sys._getframe", "sys._current_frames", "sys.settrace", "sys.setprofile", "gc.get_objects",
        "gc.get_referrers", "gc.get_referents", "os.exec", "os.posix_spawn", "os.spawn",
        "object.__getattr__", "object.__setattr__", "ctypes.", "code.__new__", "function.__new__",
    )

    def hook(event, args):
        if event.startswith(blocked) or (event == "open" and str(args[0]).startswith("/proc")):
            raise RuntimeError("not allowed in a unit test: " + event)

    sys.addaudithook(hook)

    def report(what, exc):
        try:
            lines, tb = [], exc.__traceback__.tb_next  # from the solution or test on
            while tb is not None:
                lines.append(str(tb.tb_lineno))
                tb = tb.tb_next
            sys.stderr.write("--- %s\\n%s: %s (lines %s)\\n" % (what, type(exc).__name__, exc, ", ".join(lines)))
        except BaseException:
            sys.stderr.write("--- %s\\n" % what)

    namespace = {"__name__": "solution"}
    try:
        exec(compile(solution, "solution.py", "exec"), namespace)
    except BaseException as exc:
        report("the solution failed before any test ran:", exc)
        return False
    try:
        exec(compile(test, "test_%d.py" % index, "exec"), namespace)
    except BaseException as exc:
        report("test %d failed:\\n%s" % (index, test), exc)
        return False
    return True


def _tts_main():
    try:
        ok = _tts_child() is True
    except BaseException:
        ok = False
    if not ok:
        raise SystemExit(1)


_tts_main()
"""
"""One test in a fresh interpreter: the solution, then the test, in one namespace. Before the
solution runs it takes away what could fake a normal exit or reach the harness (``os._exit``,
re-creating ``posix``, frames, tracing, ``gc`` walks, ``exec``, ctypes, ``/proc``)."""


def _normalize_output(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _tail(text: str, limit: int = 1500) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _failure(result: ProgramResult, timeout: float) -> str:
    if result.timed_out:
        return f"timed out after {timeout:g} s"
    if result.killed_reason == "output_limit":
        return "killed: printed more than the output limit"
    if result.killed_reason:
        return f"killed: {result.killed_reason}"
    return f"exit code {result.exit_code}"


class ProgramOptions(VerifierOptions):
    """Options of :class:`ProgramVerifier` (``ProgramVerifier(tests)`` sets ``tests``)."""

    tests: str | Annotated[list[str], Field(strict=False)] | None = None
    """Unit tests for every problem (else ``problem.metadata["tests"]``)."""
    io_tests: Annotated[list[dict[str, Any]], Field(strict=False)] | None = None
    """stdin/stdout cases for every problem (else ``problem.metadata["io_tests"]``)."""
    timeout: float = Field(default=5.0, gt=0)
    """Seconds per program run."""
    memory_mb: int = Field(default=512, ge=64)
    max_concurrency: int = Field(default=4, ge=1)
    """Programs run at once."""


class ProgramVerifier:
    """Runs each candidate's code in the sandbox, optionally against unit tests.

    Tests come from the constructor or, per problem, from ``problem.metadata``:

    - ``tests``: a Python snippet, or a list of snippets, each one test (typically ``assert`` lines),
      run after the solution in its namespace. A snippet defining HumanEval's ``check(candidate)``
      is called with ``metadata["entry_point"]``.
    - ``io_tests``: a list of ``{"input": ..., "output": ...}``: the program gets the input on stdin
      and must print the output (trailing whitespace ignored).

    ``value`` is the fraction of tests passed and ``passed`` is true iff all pass; without tests, a
    candidate passes when its program exits with status 0 (so crashing programs can be pruned).
    ``feedback`` is the failing test and the error's trace (its tail), what ``refine`` shows.
    """

    name: ClassVar[str] = "program"
    Options = ProgramOptions

    def __init__(
        self, options: ProgramOptions | Mapping[str, Any] | str | Sequence[str] | None = None, **kw: Any
    ) -> None:
        self.options = verifier_options(ProgramOptions, options, kw, self.name, first="tests")
        self.limits = SandboxLimits(timeout=self.options.timeout, memory_mb=self.options.memory_mb)
        self.cost = VerifierCost(kind="program", calls=0, max_seconds=self.options.timeout)

    def _tests_of(self, problem: Problem) -> tuple[list[str], list[tuple[str, str]]]:
        o = self.options
        tests = o.tests if o.tests is not None else problem.metadata.get("tests")
        io = o.io_tests if o.io_tests is not None else problem.metadata.get("io_tests")
        snippets = [tests] if isinstance(tests, str) else list(tests or [])
        entry = problem.metadata.get("entry_point")
        if entry:
            snippets = [t + f"\ncheck({entry})\n" if re.search(r"^def check\(", t, re.M) else t for t in snippets]
        cases = []
        for i, case in enumerate(io or []):
            if "input" not in case or "output" not in case:
                raise ConfigError(f"problem {problem.id!r}: io_tests[{i}] needs 'input' and 'output' keys.")
            cases.append((str(case["input"]), str(case["output"])))
        return snippets, cases

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context | None = None) -> list[Score]:
        """One score per candidate, in order; programs run ``max_concurrency`` at a time."""
        snippets, cases = self._tests_of(problem)
        gate = asyncio.Semaphore(self.options.max_concurrency)

        async def run(code: str, stdin: str = "", files: dict[str, str] | None = None) -> ProgramResult:
            async with gate:
                return await arun_program(code, limits=self.limits, stdin=stdin, files=files)

        async def judge(candidate: Candidate) -> Score:
            source = candidate.text or candidate.answer or ""
            code = extract_code(source)
            if not code.strip():
                return Score(value=0.0, passed=False, feedback="No code found.", verifier=self.name)
            if not snippets and not cases:
                result = await run(code)
                feedback = (
                    _tail(result.stdout)
                    if result.ok
                    else f"{_failure(result, self.options.timeout)}\n{_tail(result.stderr)}".strip()
                )
                return Score(value=float(result.ok), passed=result.ok, feedback=feedback, verifier=self.name)
            jobs = [self._run_unit_tests(code, snippets, run)] if snippets else []
            jobs += [self._run_io_case(code, i, inp, out, run) for i, (inp, out) in enumerate(cases)]
            outcomes = await asyncio.gather(*jobs)
            passed = sum(n for n, _ in outcomes)
            total = len(snippets) + len(cases)
            errors = [msg for _, msg in outcomes if msg]
            ok = passed == total
            feedback = f"all {total} tests passed" if ok else f"{passed}/{total} tests passed\n" + "\n".join(errors)
            return Score(value=passed / total, passed=ok, feedback=feedback.strip(), verifier=self.name)

        return list(await asyncio.gather(*(judge(c) for c in candidates)))

    async def _run_unit_tests(self, code: str, snippets: list[str], run: Any) -> tuple[int, str]:
        nonce = secrets.token_hex(16)
        files = {"solution.py": code, "child.py": _CHILD} | {f"test_{i}.py": t for i, t in enumerate(snippets)}
        result: ProgramResult = await run(_HARNESS, nonce + "\n", files)
        marker = re.findall(rf"^{nonce} (\d+)$", result.stdout, re.M)
        passed = min(int(marker[-1]), len(snippets)) if marker and result.ok else 0
        if passed == len(snippets):
            return passed, ""
        why = "" if marker and result.ok else _failure(result, self.options.timeout) + "\n"
        return passed, why + _tail(result.stderr)

    async def _run_io_case(self, code: str, i: int, stdin: str, expected: str, run: Any) -> tuple[int, str]:
        result: ProgramResult = await run(code, stdin)
        if result.ok and _normalize_output(result.stdout) == _normalize_output(expected):
            return 1, ""
        if not result.ok:
            return 0, f"--- io test {i} ({_failure(result, self.options.timeout)}):\n{_tail(result.stderr)}"
        return 0, (
            f"--- io test {i}: wrong output\ninput:\n{_tail(stdin, 300)}\n"
            f"expected:\n{_tail(expected, 300)}\ngot:\n{_tail(result.stdout, 300)}"
        )


# --------------------------------------------------------------------------------------------------
# Game of 24
# --------------------------------------------------------------------------------------------------

_NUMBERS_RE = re.compile(r"Numbers:\s*(\d+(?:[\s,]+\d+)*)", re.IGNORECASE)
_ANSWER_RE = re.compile(r"(?:answer\s*(?:is)?\s*[:=]?|\\boxed\{)\s*(.+)", re.IGNORECASE)
_MAX_EXPRESSION = 200
_SYMBOLS = {
    "×": "*",
    "·": "*",
    "÷": "/",
    "−": "-",
    "–": "-",
    "\\times": "*",
    "\\cdot": "*",
    "\\div": "/",
    "\\left": "",
    "\\right": "",
    "{": "(",
    "}": ")",
}


def game24_numbers(problem: Problem) -> list[int]:
    """The four numbers of a Game of 24 problem: ``metadata["numbers"]`` or "Numbers: a b c d" in
    the question."""
    given = problem.metadata.get("numbers")
    if given is not None:
        numbers = [int(n) for n in (given.split() if isinstance(given, str) else given)]
    else:
        m = _NUMBERS_RE.search(problem.question)
        numbers = [int(n) for n in re.split(r"[\s,]+", m.group(1).strip())] if m else []
    if len(numbers) != 4:
        raise ConfigError(
            f"problem {problem.id!r} must give four numbers as 'Numbers: a b c d' in the "
            f"question or metadata['numbers'], got {numbers or problem.question[:80]!r}."
        )
    return numbers


def extract_expression(text: str | None) -> str | None:
    """The arithmetic expression of a reply: after the last "answer is" / "Answer:" / ``\\boxed{``,
    else the last non-empty line; its "= 24" part, LaTeX and Unicode operators and a final period
    removed. Not checked: see :func:`check_game24`."""
    if not text or not text.strip():
        return None
    matches = _ANSWER_RE.findall(text)
    line = matches[-1] if matches else text.strip().splitlines()[-1]
    line = line.strip().strip("`*$ ").rstrip(".").strip()
    if line.startswith("\\boxed{"):
        line = line[len("\\boxed{") :]
    if "=" in line:  # "(6 - 4) * (1 + 11) = 24" or "24 = ..."
        sides = [s.strip() for s in line.split("=") if s.strip()]
        line = next((s for s in sides if s != "24"), "")
    for symbol, op in _SYMBOLS.items():
        line = line.replace(symbol, op)
    line = line.strip().strip("`*$ ").rstrip(".").strip()
    while line.count(")") > line.count("(") and line.endswith(")"):  # the "}" closing \boxed{
        line = line[:-1].rstrip()
    return line or None


_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


def _evaluate(node: ast.AST, used: list[int]) -> Fraction:
    """Evaluate an arithmetic AST exactly; anything but integers, + - * / and unary minus raises."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, used)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left, used), _evaluate(node.right, used)
        if isinstance(node.op, ast.Div) and right == 0:
            raise ZeroDivisionError("division by zero")
        return cast(Fraction, _BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand, used)
    what = type(node.op).__name__ if isinstance(node, ast.BinOp | ast.UnaryOp) else type(node).__name__
    raise ValueError(f"only integers, + - * / and parentheses are allowed, found {what}")


def check_game24(expression: str | None, numbers: Sequence[int], target: int = 24) -> tuple[bool, str]:
    """Whether ``expression`` uses each of ``numbers`` exactly once (integers, ``+ - * /``,
    parentheses, unary minus) and equals ``target`` exactly, with a one-line reason. Parses with
    :mod:`ast` and evaluates with :class:`~fractions.Fraction`: nothing is ever executed."""
    if not expression:
        return False, "no expression found"
    if len(expression) > _MAX_EXPRESSION:
        return False, f"expression longer than {_MAX_EXPRESSION} characters"
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return False, f"not an arithmetic expression: {expression!r}"
    used: list[int] = []
    try:
        value = _evaluate(tree, used)
    except ZeroDivisionError:
        return False, f"{expression} divides by zero"
    except ValueError as exc:
        return False, f"not an arithmetic expression ({exc}): {expression!r}"
    if sorted(used) != sorted(numbers):
        return False, (
            f"{expression} uses {' '.join(map(str, sorted(used)))}; it must use each of "
            f"{' '.join(map(str, sorted(numbers)))} exactly once"
        )
    if value != target:
        return False, f"{expression} = {value}, not {target}"
    return True, f"{expression} = {target}"


class Game24Options(VerifierOptions):
    """Options of :class:`Game24Verifier`."""

    target: int = 24
    """The value the expression must reach."""


class Game24Verifier:
    """Game of 24: the candidate's expression must use the problem's four numbers once each with
    ``+ - * /`` and parentheses and equal 24. A pure rule: the expression is parsed, never run."""

    name: ClassVar[str] = "game24"
    Options = Game24Options

    def __init__(self, options: Game24Options | Mapping[str, Any] | int | None = None, **kw: Any) -> None:
        self.options = verifier_options(Game24Options, options, kw, self.name, first="target")
        self.cost = VerifierCost(kind="rule", calls=0)

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context | None = None) -> list[Score]:
        """One score per candidate, in order: 1.0 when its expression is a solution."""
        numbers = game24_numbers(problem)
        out = []
        for c in candidates:
            expression = extract_expression(c.answer) if c.answer else None
            expression = expression or extract_expression(c.text)
            ok, why = check_game24(expression, numbers, self.options.target)
            out.append(Score(value=float(ok), passed=ok, feedback=why, verifier=self.name))
        return out
