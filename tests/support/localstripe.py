"""Run localstripe (a Stripe API emulator) as a real subprocess for acceptance tests.

Usage::

    from tests.support.localstripe import run_localstripe

    with run_localstripe() as ls:
        ls.register_webhook("http://127.0.0.1:8000/webhooks/stripe/main", "whsec_test")
        client = ls.client()                      # stripe.StripeClient aimed at ls.api_base
        client.v1.customers.create({"email": "a@example.com"})

What you get:

* a fresh, empty, in-memory localstripe on a free ``127.0.0.1`` port (never ``0.0.0.0``
  or ``::``), started through ``tests/support/localstripe_launcher.py``. The launcher
  runs localstripe's own aiohttp ``app`` unchanged but (1) binds the socket to
  127.0.0.1 itself, because ``localstripe.server.start()`` binds ``::`` (all interfaces),
  and (2) disables the persistence that otherwise pickles the whole store to the single
  machine-wide file ``/tmp/localstripe.pickle`` after every write (slow, and parallel
  runs clobber each other). It is always started with ``--from-scratch``.
* ``api_base`` (``"http://127.0.0.1:PORT"``) for ``StripeClient(base_addresses=...)``
  or the legacy ``stripe.api_base``.
* ``register_webhook()`` -> ``POST /_config/webhooks/{id}`` (localstripe-only endpoint).
  localstripe then POSTs every later event, signed like Stripe, to that URL about one
  second after the API call that caused it; failed deliveries are never retried.
* the server's stderr/stdout (access log and ``webhook "..." successfully delivered`` /
  ``failed`` lines) in ``log_path``; ``read_log()`` returns it.

On exit the process gets SIGTERM, then SIGKILL if it has not stopped after a few
seconds, and the temporary directory with the log is removed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import stripe

__all__ = ["DEFAULT_API_KEY", "LocalStripe", "LocalStripeError", "run_localstripe"]

#: Any key starting with ``sk_`` (longer than 5 chars) is accepted by localstripe.
DEFAULT_API_KEY = "sk_test_localstripe"

_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_LAUNCHER_MODULE = "tests.support.localstripe_launcher"

# Never route 127.0.0.1 through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LocalStripeError(RuntimeError):
    """localstripe failed to start, died, or refused a request."""


@dataclass
class LocalStripe:
    """A running localstripe subprocess (see :func:`run_localstripe`)."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    api_key: str = DEFAULT_API_KEY
    webhooks: dict[str, str] = field(default_factory=dict)  # id -> url

    @property
    def api_base(self) -> str:
        """Base URL of the emulated API, e.g. ``http://127.0.0.1:54321`` (no ``/v1``)."""
        return f"http://{self.host}:{self.port}"

    # -- localstripe's private configuration endpoints -------------------------------

    def register_webhook(
        self,
        url: str,
        secret: str,
        events: list[str] | None = None,
        id: str = "snapshots",
    ) -> None:
        """Make localstripe POST signed events to ``url``.

        ``secret`` is the signing secret (``whsec_...`` by convention, any string works).
        ``events`` restricts the event types sent; ``None`` means all. Registering the
        same ``id`` again replaces that receiver; distinct ids all receive every event.
        Only events created after (or up to ~1 s before) registration are delivered:
        localstripe looks up receivers when it sends, one second after the event.
        """
        if events is not None and not events:
            # localstripe would treat a missing events[] field as "all events".
            raise ValueError("events=[] would match nothing; pass None for all events")
        fields: list[tuple[str, str]] = [("url", url), ("secret", secret)]
        for event_type in events or []:
            fields.append(("events[]", event_type))
        self._request("POST", f"/_config/webhooks/{urllib.parse.quote(id, safe='')}", fields)
        self.webhooks[id] = url

    def flush_data(self) -> None:
        """Delete every object (``DELETE /_config/data``). Webhook receivers stay."""
        self._request("DELETE", "/_config/data")

    # -- conveniences -----------------------------------------------------------------

    def client(self, api_key: str | None = None, **kwargs: Any) -> stripe.StripeClient:
        """A ``stripe.StripeClient`` aimed at this server (no network retries)."""
        import stripe

        kwargs.setdefault("max_network_retries", 0)
        return stripe.StripeClient(
            api_key or self.api_key, base_addresses={"api": self.api_base}, **kwargs
        )

    def request(self, method: str, path: str, fields: list[tuple[str, str]] | None = None) -> Any:
        """Raw authenticated call, e.g. ``ls.request("GET", "/v1/events?limit=100")``.

        Returns the decoded JSON body, or ``None`` for an empty body.
        """
        return self._request(method, path, fields, auth=True)

    def read_log(self) -> str:
        """The server's combined stdout/stderr so far."""
        return self.log_path.read_text(errors="replace")

    def is_running(self) -> bool:
        return self.process.poll() is None

    # -- internals --------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        fields: list[tuple[str, str]] | None = None,
        *,
        auth: bool = False,
        timeout: float = 10.0,
    ) -> Any:
        data = urllib.parse.urlencode(fields).encode() if fields is not None else None
        req = urllib.request.Request(self.api_base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        if auth:
            token = base64.b64encode(f"{self.api_key}:".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with _OPENER.open(req, timeout=timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise LocalStripeError(f"{method} {path} -> HTTP {e.code}: {detail}") from e
        return json.loads(body) if body.strip() else None


def _wait_until_ready(ls: LocalStripe, timeout: float) -> None:
    """Poll until the HTTP server answers (any HTTP status counts as 'up')."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not ls.is_running():
            raise LocalStripeError(
                f"localstripe exited with code {ls.process.returncode}:\n{ls.read_log()}"
            )
        try:
            # Side-effect free (GET /v1/balance, by contrast, creates a Balance object
            # and emits a balance.available event).
            ls._request("GET", "/v1/customers?limit=1", auth=True, timeout=1.0)
            return
        except LocalStripeError:
            return  # it answered, even if with an error status
        except OSError as e:  # connection refused/reset, timeout
            last_error = e
        time.sleep(0.05)
    raise LocalStripeError(
        f"localstripe did not answer within {timeout}s ({last_error!r}):\n{ls.read_log()}"
    )


def _stop(process: subprocess.Popen[bytes], grace: float) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)


@contextlib.contextmanager
def run_localstripe(
    *,
    port: int = 0,
    api_key: str = DEFAULT_API_KEY,
    startup_timeout: float = 20.0,
    stop_grace: float = 5.0,
    keep_log: bool = False,
) -> Iterator[LocalStripe]:
    """Start an isolated localstripe on ``127.0.0.1`` and stop it on exit.

    ``port=0`` (default) lets the launcher bind a free port itself (no race).
    ``api_key`` is only what :meth:`LocalStripe.client` and :meth:`LocalStripe.request`
    send; the server accepts any ``sk_...`` key. With ``keep_log=True`` the temporary
    directory holding ``log_path`` is left behind for inspection.
    """
    workdir = Path(tempfile.mkdtemp(prefix="localstripe-"))
    port_file = workdir / "port"
    log_path = workdir / "localstripe.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [
        sys.executable,
        "-m",
        _LAUNCHER_MODULE,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--port-file",
        str(port_file),
        "--from-scratch",
        "--parent-pid",
        str(os.getpid()),
    ]
    log_file = open(log_path, "wb")
    process: subprocess.Popen[bytes] | None = None
    try:
        process = subprocess.Popen(
            cmd,
            cwd=_PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + startup_timeout
        while not port_file.exists():
            if process.poll() is not None:
                raise LocalStripeError(
                    f"localstripe exited with code {process.returncode}:\n"
                    + log_path.read_text(errors="replace")
                )
            if time.monotonic() > deadline:
                raise LocalStripeError(
                    "localstripe did not bind a port in time:\n"
                    + log_path.read_text(errors="replace")
                )
            time.sleep(0.02)
        bound_port = int(port_file.read_text().strip())
        ls = LocalStripe(
            host="127.0.0.1",
            port=bound_port,
            process=process,
            log_path=log_path,
            api_key=api_key,
        )
        _wait_until_ready(ls, max(0.1, deadline - time.monotonic()))
        yield ls
    finally:
        if process is not None:
            _stop(process, stop_grace)
        log_file.close()
        if not keep_log:
            shutil.rmtree(workdir, ignore_errors=True)
