"""Process fixtures for acceptance tests: the real `snapshots` CLI, `serve` and `worker`
subprocesses on 127.0.0.1, and a real localstripe (tests/support).

Every process is stopped in teardown (SIGTERM, then SIGKILL), every wait is bounded, and the
logs of every process a failed test started are attached to its report.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.support.localstripe import LocalStripe, run_localstripe

CLI_TIMEOUT = 30.0  # seconds one CLI command may take
START_TIMEOUT = 60.0  # seconds `serve` may take to answer /healthz (its processes start at once)
STOP_GRACE = 10.0  # seconds a process gets to exit after SIGTERM before SIGKILL
EXECUTABLE = Path(sys.executable).with_name("snapshots")

T = TypeVar("T")
# The pytest-xdist group of tests that start whole deployments (see pytest_collection_modifyitems).
PROCESSES = pytest.mark.xdist_group("processes")


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(check: Callable[[], T], *, timeout: float, interval: float = 0.25) -> T:
    """Call `check` until it returns without an AssertionError; after `timeout` seconds the
    last AssertionError is raised, so a failure says what was still wrong."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)


def stop(process: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> int:
    """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)
    return int(process.returncode)


def _clean_environ() -> dict[str, str]:
    """The test's environment without settings or proxies that would leak into the processes."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SNAPSHOTS_") and not k.lower().endswith("_proxy")
    }


@dataclass
class Running:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class Snapshots:
    """One Snapshots deployment: a SQLite database in `home` and the processes using it."""

    home: Path
    port: int
    master_key: str | None = None
    running: list[Running] = field(default_factory=list)
    # More settings for every process it starts (`{"SNAPSHOTS_LOCATION_POLL_INTERVAL": "3600"}`).
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.home / 'snapshots.db'}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = _clean_environ()
        env["SNAPSHOTS_DATABASE_URL"] = self.database_url
        env["SNAPSHOTS_HOST"] = "127.0.0.1"
        env["SNAPSHOTS_PORT"] = str(self.port)
        env["PYTHONUNBUFFERED"] = "1"
        if self.master_key:
            env["SNAPSHOTS_MASTER_KEY"] = self.master_key
        env.update(self.extra_env)
        return env

    # -- one-shot commands ------------------------------------------------------------

    def popen_cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start a CLI command without waiting (several may run at once); `env` adds to or
        overrides the deployment's environment (`{"SNAPSHOTS_STRIPE_RPS": "2"}`)."""
        return subprocess.Popen(
            [str(EXECUTABLE), *args],
            cwd=self.home,
            env=self.env | (env or {}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def cli(
        self, *args: str, ok: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `snapshots ARGS`; with `ok`, a non-zero exit fails the test with its output."""
        process = self.popen_cli(*args, env=env)
        try:
            stdout, stderr = process.communicate(timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate(timeout=STOP_GRACE)
            raise AssertionError(
                f"snapshots {' '.join(args)} ran over {CLI_TIMEOUT}s\n{stdout}\n{stderr}"
            ) from None
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        if ok:
            assert result.returncode == 0, (
                f"snapshots {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{stdout}\nstderr:\n{stderr}"
            )
        return result

    def cli_json(self, *args: str, env: dict[str, str] | None = None) -> Any:
        result = self.cli(*args, env=env)
        try:
            return json.loads(result.stdout)
        except ValueError as exc:
            raise AssertionError(
                f"snapshots {' '.join(args)} printed no JSON:\n{result.stdout}\n{result.stderr}"
            ) from exc

    # -- long-running processes -------------------------------------------------------

    def start(self, name: str, *args: str) -> Running:
        """Start `snapshots ARGS` in the background, stdout and stderr to `home/<name>.log`."""
        log_path = self.home / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(EXECUTABLE), *args],
                cwd=self.home,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        running = Running(name, process, log_path)
        self.running.append(running)
        return running

    def serve(self, *extra: str) -> Running:
        """`snapshots serve` on 127.0.0.1:port, once `GET /healthz` answers 200."""
        running = self.start(
            "serve", "serve", "--host", "127.0.0.1", "--port", str(self.port), *extra
        )
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(base_url=self.base_url, trust_env=False, timeout=2.0) as http:
            while True:
                if running.process.poll() is not None:
                    raise AssertionError(
                        f"snapshots serve exited with {running.process.returncode}:\n"
                        + running.log_path.read_text(errors="replace")
                    )
                try:
                    if http.get("/healthz").status_code == 200:
                        return running
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"snapshots serve did not answer /healthz within {START_TIMEOUT}s:\n"
                        + running.log_path.read_text(errors="replace")
                    )
                time.sleep(0.1)

    def worker(self) -> Running:
        return self.start("worker", "worker")

    def api(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, trust_env=False, timeout=10.0)

    def logs(self) -> list[tuple[str, str]]:
        return [
            (f"snapshots {r.name} (exit {r.process.returncode})", _read(r.log_path))
            for r in self.running
        ]

    def stop_all(self) -> None:
        for running in reversed(self.running):
            stop(running.process)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        return f"(unreadable: {exc})"


@pytest.fixture
def snapshots(tmp_path: Path) -> Iterator[Snapshots]:
    """A Snapshots deployment in a temporary directory; its processes stop at teardown."""
    assert EXECUTABLE.exists(), f"{EXECUTABLE} is missing: install the package into the venv"
    home = tmp_path / "snapshots"
    home.mkdir()
    deployment = Snapshots(home=home, port=free_port())
    try:
        yield deployment
    finally:
        deployment.stop_all()


@pytest.fixture
def localstripe() -> Iterator[LocalStripe]:
    with run_localstripe() as ls:
        yield ls


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups (`--dist loadgroup`)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test here starts a deployment of several processes and waits on them with
    deadlines: they run one at a time on one worker (`PROCESSES`), beside in-process tests, so
    they never compete with each other for the cores."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(PROCESSES)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach the logs of the processes the test ran (serve's stderr and so on)."""
    report = yield
    if report.when == "call" and report.failed:
        funcargs: dict[str, Any] = getattr(item, "funcargs", {})
        deployment = funcargs.get("snapshots")
        if isinstance(deployment, Snapshots):
            report.sections.extend(deployment.logs())
        ls = funcargs.get("localstripe")
        if isinstance(ls, LocalStripe):
            report.sections.append(("localstripe log", ls.read_log()))
    return report
