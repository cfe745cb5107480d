"""Rules about the suite itself.

Processes: a test that starts a process or a server (a `snapshots` subprocess, localstripe,
tests/support/fake_stripe.py, uvicorn, an HTTP server in a thread) carries the `acceptance`
mark, wherever it lives, so `-m "not acceptance"` runs nothing but in-process tests. Every
test in tests/acceptance carries it too.

How it is checked: the suite is collected (not run) in this process, and for every test
outside tests/acceptance the code it can reach is read: the test function, every fixture in its closure
(those it requests, directly or through other fixtures, and those named in a
`request.getfixturevalue("...")`), and, transitively, each function or class defined under
tests/ that this code names (its module's globals, or an attribute of a tests module).
The test starts a process when that code names a launcher: `subprocess.run`/`Popen`/...,
`os.fork`, `multiprocessing`, `uvicorn`, a `socketserver` server class such as
`ThreadingHTTPServer`, `asyncio`'s `create_server`, or `snapshots.readiness.serve_health`.
Type annotations do not count. Code in `snapshots` itself is not followed (a test that runs
`cli.main(["serve"])` in-process would go unseen: start `serve` as a subprocess instead).
"""

from __future__ import annotations

import ast
import asyncio
import concurrent.futures
import inspect
import multiprocessing
import os
import socketserver
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from snapshots import readiness

TESTS = Path(__file__).parent
ROOT = TESTS.parent
LAYERS = ("unit", "integration", "support", "acceptance", "browser")

PROCESS_STARTERS: frozenset[Any] = frozenset(
    {
        subprocess.Popen,
        subprocess.run,
        subprocess.call,
        subprocess.check_call,
        subprocess.check_output,
        subprocess.getoutput,
        subprocess.getstatusoutput,
        os.fork,
        os.system,
        os.posix_spawn,
        os.posix_spawnp,
        os.execv,
        os.execve,
        multiprocessing,
        multiprocessing.Process,
        concurrent.futures.ProcessPoolExecutor,
        asyncio.create_subprocess_exec,
        asyncio.create_subprocess_shell,
        readiness.serve_health,
    }
)
SERVER_METHODS = frozenset({"create_server", "start_server", "create_unix_server"})


def _is_launcher(value: Any) -> bool:
    if isinstance(value, type) and issubclass(value, socketserver.BaseServer):
        return True
    module = (
        value.__name__
        if isinstance(value, types.ModuleType)
        else getattr(value, "__module__", None)
    )
    if isinstance(module, str) and module.split(".")[0] == "uvicorn":
        return True
    try:
        return value in PROCESS_STARTERS
    except TypeError:  # unhashable
        return False


def _is_ours(value: Any) -> bool:
    """Defined under tests/ (so its code is read too)."""
    if isinstance(value, types.ModuleType):
        return value.__name__.split(".")[0] == "tests"
    if not (inspect.isfunction(value) or inspect.isclass(value)):
        return False
    return str(getattr(value, "__module__", "")).split(".")[0] == "tests"


class _Names(ast.NodeVisitor):
    """The dotted names code refers to, and the fixtures it asks for by name; skips
    annotations, which name types rather than run anything."""

    def __init__(self) -> None:
        self.dotted: list[list[str]] = []
        self.fixtures: list[str] = []

    def visit_arg(self, node: ast.arg) -> None:
        pass

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for item in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults, *node.body]:
            if item is not None:
                self.visit(item)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Attribute(self, node: ast.Attribute) -> None:
        parts = [node.attr]
        base: ast.expr = node.value
        while isinstance(base, ast.Attribute):
            parts.append(base.attr)
            base = base.value
        if isinstance(base, ast.Name):
            self.dotted.append([base.id, *reversed(parts)])
        else:
            self.dotted.append(["", *reversed(parts)])
            self.visit(base)

    def visit_Name(self, node: ast.Name) -> None:
        self.dotted.append([node.id])

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "getfixturevalue"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            self.fixtures.append(node.args[0].value)
        self.generic_visit(node)


@cache
def _read(code: Any) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]:
    try:
        source = textwrap.dedent(inspect.getsource(code))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):  # no source, or a lambda inside an expression
        return (), ()
    names = _Names()
    names.visit(tree)
    return tuple(tuple(d) for d in names.dotted), tuple(names.fixtures)


def _namespace(code: Any) -> dict[str, Any]:
    if isinstance(code, types.ModuleType):
        return vars(code)
    module = sys.modules.get(getattr(code, "__module__", ""))
    return getattr(code, "__globals__", None) or (vars(module) if module else {})


def _resolve(dotted: tuple[str, ...], namespace: dict[str, Any]) -> list[Any]:
    """What each prefix of `a.b.c` names, as far as it can be followed."""
    if not dotted[0]:
        return []
    found = []
    value = namespace.get(dotted[0], _MISSING)
    for part in dotted[1:]:
        if value is _MISSING:
            break
        found.append(value)
        value = getattr(value, part, _MISSING)
    if value is not _MISSING:
        found.append(value)
    return found


_MISSING = object()

Fixtures = Callable[[str], list[Any]]


def launch_path(code: Any, fixtures: Fixtures, seen: set[int] | None = None) -> list[str] | None:
    """How `code` (a function, class or module) gets to a launcher, as a list of names; None
    when it does not."""
    seen = set() if seen is None else seen
    if callable(code):
        code = inspect.unwrap(code)  # a @contextmanager's own function, with its globals
    if id(code) in seen:
        return None
    seen.add(id(code))
    dotted, wanted = _read(code)
    namespace = _namespace(code)
    label = getattr(code, "__qualname__", getattr(code, "__name__", repr(code)))
    for names in dotted:
        if names[-1] in SERVER_METHODS:
            return [label, ".".join(names)]
        for value in _resolve(names, namespace):
            if _is_launcher(value):
                return [label, ".".join(names)]
            if _is_ours(value) and not isinstance(value, types.ModuleType):
                path = launch_path(value, fixtures, seen)
                if path is not None:
                    return [label, *path]
    for name in wanted:
        for func in fixtures(name):
            path = launch_path(func, fixtures, seen)
            if path is not None:
                return [label, f"fixture {name}", *path]
    return None


def _item_launch_path(item: pytest.Function) -> list[str] | None:
    manager = item.session._fixturemanager

    def fixtures(name: str) -> list[Any]:
        return [d.func for d in manager.getfixturedefs(name, item) or () if _is_ours(d.func)]

    seen: set[int] = set()
    path = launch_path(item.function, fixtures, seen)
    if path is not None:
        return path
    for name in item.fixturenames:
        for func in fixtures(name):
            path = launch_path(func, fixtures, seen)
            if path is not None:
                return [f"fixture {name}", *path]
    return None


class _Collect:
    def __init__(self) -> None:
        self.items: list[pytest.Item] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.items = list(session.items)


@pytest.fixture(scope="module")
def suite() -> list[pytest.Item]:
    """Every test, collected (not run) in this process."""
    collect = _Collect()
    args = [str(TESTS / layer) for layer in LAYERS]
    options = ["--collect-only", "-qq", "-p", "no:cacheprovider", "--rootdir", str(ROOT)]
    code = pytest.main([*options, "-c", str(ROOT / "pyproject.toml"), *args], plugins=[collect])
    assert code == pytest.ExitCode.OK, f"collecting the suite failed ({code!r})"
    assert collect.items
    return collect.items


def test_tests_that_start_processes_are_marked_acceptance(suite: list[pytest.Item]) -> None:
    unmarked = []
    for item in suite:
        assert isinstance(item, pytest.Function), item
        if item.get_closest_marker("acceptance") is not None:
            continue
        if Path(item.path).is_relative_to(TESTS / "acceptance"):
            unmarked.append(f"{item.nodeid}: in tests/acceptance")
        elif (path := _item_launch_path(item)) is not None:
            unmarked.append(f"{item.nodeid}: {' -> '.join(path)}")
    assert not unmarked, "start processes without the acceptance mark:\n" + "\n".join(unmarked)


def test_the_process_check_sees_the_launchers() -> None:
    """The check has teeth: it follows helpers and fixtures to the launchers we use."""
    from tests.acceptance.conftest import Snapshots
    from tests.conftest import fixture
    from tests.support.fake_stripe import run_fake_stripe
    from tests.support.localstripe import run_localstripe

    def no_fixtures(name: str) -> list[Any]:
        return []

    for launcher in (run_fake_stripe, run_localstripe, Snapshots):
        assert launch_path(launcher, no_fixtures) is not None, launcher

    def starts_a_server() -> None:
        readiness.serve_health("127.0.0.1", 0, faults=None)

    def only_names_types(process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        return process

    assert launch_path(starts_a_server, no_fixtures) is not None
    assert launch_path(only_names_types, no_fixtures) is None
    assert launch_path(fixture, no_fixtures) is None
