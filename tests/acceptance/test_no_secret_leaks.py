"""No secret in clear text anywhere a person or a log collector could read it.

A full run with real processes: localstripe as Stripe, `snapshots connect stripe` with a known
secret key and signing secret, `snapshots serve` (its output captured), webhooks delivered and
applied, `snapshots sync`, API keys made by the CLI and by the API, rotated and revoked, the
webhook signing secret rotated, the master key rotated, every read of the CLI and of the API,
and the error paths (refused and malformed keys and secrets, bad API keys, bad signatures,
`-v` with its debug log and tracebacks).

Then everything captured is scanned: every CLI stdout and stderr, every HTTP response body and
header, the logs of every process, a dump of the SQLite database (`iterdump()`, then every row
of every table with BLOBs decoded) taken while the connection exists and at the end, and the
raw bytes of every file the deployment wrote (the database and its WAL while serve runs, the
logs; not the master key file, which is where that key lives). None may hold the Stripe keys,
a webhook signing secret, a master key or an API key's secret, whole or any 12 characters of
its random part; the one output that creates an API key (`keys create`, `keys rotate`, `POST
/v1/api-keys`, `POST /v1/api-keys/{id}/rotate`) shows that key, once. A hit fails with where
it was and what surrounds it, the secret masked. The last-4 forms must show up where they are
meant to, so the scan is known to see the data.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from snapshots.connections import SECRETS_TTL
from tests.support.localstripe import LocalStripe

from .conftest import CLI_TIMEOUT, Snapshots, eventually, free_port, stop

pytestmark = pytest.mark.acceptance

APPLY_TIMEOUT = 30.0  # seconds for webhooks to arrive and be applied
AT_ONCE = 4  # CLI commands run side by side by `cli_all`
WINDOW = 12  # characters of a secret's random part that count as showing it


def _random(n: int = 12) -> str:
    return secrets.token_hex(n)


@dataclass
class Capture:
    where: str
    text: str


@dataclass
class Secret:
    name: str
    value: str
    prefix: str = ""  # the part that is not secret (sk_test_leak, whsec_leakfirst, snp_live_)
    # Captures (by `where`) allowed to show it: the one output that creates an API key.
    allowed: set[str] = field(default_factory=set)

    def forms(self) -> set[str]:
        """What shows the secret: the whole of it (a base64 key also without its padding or
        URL-encoded) and every WINDOW characters of its random part."""
        found = {self.value, self.value.rstrip("="), self.value.replace("=", "%3D")}
        body = self.value[len(self.prefix) :].rstrip("=")
        found.update(body[i : i + WINDOW] for i in range(len(body) - WINDOW + 1))
        return found


def scan(captures: list[Capture], hidden: list[Secret]) -> list[str]:
    """Where each secret shows up outside the captures allowed to show it (one line per
    secret and capture, the first place in it)."""

    def masked(text: str) -> str:
        for secret in hidden:
            text = text.replace(secret.value, f"<{secret.name}>")
        return text

    hits = []
    for secret in hidden:
        pattern = re.compile("|".join(re.escape(f) for f in sorted(secret.forms(), key=len)[::-1]))
        for capture in captures:
            if capture.where in secret.allowed:
                continue
            match = pattern.search(capture.text)
            if match is None:
                continue
            start, end = match.span()
            around = capture.text[max(0, start - 60) : start] + "<HERE>" + capture.text[end:][:60]
            shown = "all of it" if match.group() == secret.value else f"{end - start} characters"
            hits.append(
                f"{secret.name} ({shown}) in {masked(capture.where)}: ...{masked(around)!r}..."
            )
    return hits


@dataclass
class Recorder:
    """Runs the CLI and the API and keeps everything they printed or answered."""

    snapshots: Snapshots
    captures: list[Capture] = field(default_factory=list)

    def add(self, where: str, text: str) -> None:
        self.captures.append(Capture(where, text))

    def _keep(self, args: tuple[str, ...], result: subprocess.CompletedProcess[str]) -> str:
        where = f"snapshots {' '.join(args)}"
        self.add(f"{where} (stdout)", result.stdout)
        self.add(f"{where} (stderr)", result.stderr)
        return where

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = self.snapshots.cli(*args, ok=False)
        where = self._keep(args, result)
        if ok:
            assert result.returncode == 0, f"{where}: exit {result.returncode}\n{result.stderr}"
        else:
            assert result.returncode != 0, f"{where}: exit 0\n{result.stdout}"
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args).stdout)

    def cli_all(self, *commands: tuple[str, ...]) -> None:
        """Read-only commands, a few at once (a busy 2-core machine starts a dozen Pythons
        slowly); each must succeed."""
        for first in range(0, len(commands), AT_ONCE):
            started = [
                (args, self.snapshots.popen_cli(*args))
                for args in commands[first : first + AT_ONCE]
            ]
            try:
                for args, process in started:
                    stdout, stderr = process.communicate(timeout=CLI_TIMEOUT)
                    result = subprocess.CompletedProcess(
                        process.args, process.returncode, stdout, stderr
                    )
                    where = self._keep(args, result)
                    assert result.returncode == 0, f"{where}: exit {result.returncode}\n{stderr}"
            finally:
                for _, process in started:
                    if process.poll() is None:
                        process.kill()
                    process.communicate(timeout=5)

    def http(
        self, client: httpx.Client, method: str, path: str, *, label: str = "", **kwargs: Any
    ) -> httpx.Response:
        response = client.request(method, path, **kwargs)
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        self.add(
            self.where(method, path, response) + (f" ({label})" if label else ""),
            f"HTTP {response.status_code}\n{headers}\n\n{response.text}",
        )
        return response

    @staticmethod
    def where(method: str, path: str, response: httpx.Response) -> str:
        return f"{method} {path} -> {response.status_code}"

    def files(self, home: Path, moment: str, *, skip: set[Path]) -> None:
        for path in sorted(home.rglob("*")):
            if path.is_file() and path not in skip:
                raw = path.read_bytes().decode("utf-8", errors="replace")
                self.add(f"the file {path.relative_to(home)}, raw, {moment}", raw)


def dump_database(path: Path) -> str:
    """`iterdump()` of the SQLite file, then every row of every table with BLOBs decoded."""
    conn = sqlite3.connect(path)
    try:
        lines = list(conn.iterdump())
        names = [
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not row[0].startswith("sqlite_")
        ]
        for name in names:
            for row in conn.execute(f'SELECT * FROM "{name}"'):
                cells = [
                    value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
                    for value in row
                ]
                lines.append(f"{name}: {cells!r}")
    finally:
        conn.close()
    return "\n".join(lines)


def inbox_settled(api: httpx.Client, ls: LocalStripe, *, at_least: int) -> None:
    """Every event localstripe sent is in the inbox and processed (done or ignored)."""
    sent = ls.request("GET", "/v1/events?limit=100")["data"]
    assert len(sent) >= at_least, f"localstripe made {len(sent)} events"
    response = api.get("/v1/events", params={"limit": 100})
    assert response.status_code == 200, response.text
    items = {item["event_id"]: item for item in response.json()["data"]}
    missing = [e["id"] for e in sent if e["id"] not in items]
    assert not missing, f"not (yet) received: {missing}"
    unsettled = {k: v["status"] for k, v in items.items() if v["status"] not in ("done", "ignored")}
    assert not unsettled, f"not (yet) applied: {unsettled}"


def test_the_scan_finds_a_secret_whole_or_in_part() -> None:
    key = Secret("a key", "sk_test_leak" + "0123456789abcdef" * 2, prefix="sk_test_leak")
    shown = Secret("a shown key", "snp_live_" + "A1b2C3d4" * 5, prefix="snp_live_", allowed={"b"})
    captures = [
        Capture("a", f"error: {key.value} refused"),
        Capture("b", f"the key: {shown.value}"),  # where it may be
        Capture("c", "sk_test_leak01234567… …cdef, snp_live_A1b2…C3d4"),  # short forms
        Capture("d", f"part: {key.value[14:30]}"),
    ]
    hits = scan(captures, [key, shown])
    assert len(hits) == 2, hits
    assert hits[0].startswith("a key (all of it) in a: ...'error: <HERE> refused'"), hits[0]
    assert hits[1].startswith("a key (12 characters) in d: ...'part: <HERE>"), hits[1]


def test_no_secret_in_any_output_log_or_dump(
    snapshots: Snapshots, localstripe: LocalStripe, request: pytest.FixtureRequest
) -> None:
    ls = localstripe
    stripe_key = f"sk_test_leak{_random()}"
    refused_key = f"rk_test_leakrefused{_random()}"  # localstripe refuses rk_ keys
    first_secret = f"whsec_leakfirst{_random()}"
    second_secret = f"whsec_leaksecond{_random()}"
    wrong_secret = f"whsec_leakwrong{_random()}"  # an attacker's: Snapshots never had it
    run = Recorder(snapshots)
    hidden = [
        Secret("the Stripe secret key", stripe_key, "sk_test_leak"),
        Secret("the refused Stripe key", refused_key, "rk_test_leakrefused"),
        Secret("the first webhook signing secret", first_secret, "whsec_leakfirst"),
        Secret("the second webhook signing secret", second_secret, "whsec_leaksecond"),
    ]

    def api_key(name: str, value: str, created_in: str) -> str:
        shown_in = [c.text for c in run.captures if c.where == created_in]
        assert value.startswith("snp_") and len(shown_in) == 1 and value in shown_in[0], name
        hidden.append(Secret(name, value, value[: len("snp_live_")], allowed={created_in}))
        return value

    # 1. The database; connections Stripe refuses, a malformed secret, Stripe unreachable.
    run.cli("migrate")
    unreachable = f"http://127.0.0.1:{free_port()}"
    for key, secret, base in (
        (refused_key, first_secret, ls.api_base),
        (stripe_key, "not-a-signing-secret", ls.api_base),
        (stripe_key, first_secret, unreachable),
    ):
        args = ("stripe", "--secret-key", key, "--webhook-secret", secret, "--api-base", base)
        run.cli("connect", *args, ok=False)
        run.cli("-v", "connect", *args, ok=False)  # -v: debug log and the full traceback
    connection = run.cli_json(
        "connect",
        "stripe",
        "--secret-key",
        stripe_key,
        "--webhook-secret",
        first_secret,
        "--api-base",
        ls.api_base,
        "--name",
        "leaks",
        "--json",
    )
    key_file = snapshots.home / "snapshots.db.key"
    key_files = {key_file, key_file.with_name(key_file.name + ".new")}
    first_master_key = key_file.read_text().strip()
    hidden.append(Secret("the first master key", first_master_key))
    webhook_url = f"{snapshots.base_url}/webhooks/stripe/{connection['id']}"
    ls.register_webhook(webhook_url, first_secret)

    # 2. API keys from the CLI.
    created = run.cli_json("keys", "create", "--name", "admin", "--scope", "admin", "--json")
    where = "snapshots keys create --name admin --scope admin --json (stdout)"
    admin = api_key("the admin API key (CLI, JSON)", created["secret"], where)
    plain = run.cli("keys", "create", "--name", "reader", "--scope", "contacts.readonly")
    where = "snapshots keys create --name reader --scope contacts.readonly (stdout)"
    reader = api_key("the reader API key (CLI)", plain.stdout.strip().splitlines()[-1], where)

    # 3. serve; changes in Stripe arrive as webhooks; a backfill; a test event.
    serve = snapshots.serve()
    api = snapshots.api(admin)
    request.addfinalizer(api.close)
    client = ls.client(stripe_key)
    ada = client.v1.customers.create({"email": "ada@example.com", "name": "Ada", "metadata": {}})
    client.v1.customers.update(ada.id, {"name": "Ada Lovelace"})
    plan = client.v1.plans.create(  # localstripe bills only a customer with a subscription
        {"amount": 0, "currency": "usd", "interval": "month", "product": {"name": "Base"}}
    )
    client.v1.subscriptions.create(
        {"customer": ada.id, "items": [{"plan": plan.id}], "trial_period_days": 30}
    )
    client.v1.invoice_items.create({"customer": ada.id, "amount": 900, "currency": "usd"})
    client.v1.invoices.create({"customer": ada.id})
    eventually(lambda: inbox_settled(api, ls, at_least=4), timeout=APPLY_TIMEOUT)
    run.cli("sync", "--objects", "customers,invoices")  # localstripe has no Terminal
    run.cli("-v", "sync", "--objects", "customers")
    run.cli("send-test-event", "customer.updated", "--json")

    # 4. API keys from the API; rotation and revocation; keys that do not work.
    response = run.http(
        api, "POST", "/v1/api-keys", json={"name": "api-made", "scopes": ["events.readonly"]}
    )
    assert response.status_code == 201, response.text
    made = response.json()
    where = Recorder.where("POST", "/v1/api-keys", response)
    api_made = api_key("the API key made by the API", made["secret"], where)
    path = f"/v1/api-keys/{made['id']}/rotate"
    response = run.http(api, "POST", path, json={"overlap": "1h"})
    assert response.status_code == 201, response.text
    where = Recorder.where("POST", path, response)
    api_rotated = api_key("the API key rotated by the API", response.json()["secret"], where)
    listed = run.cli_json("keys", "list", "--json")
    reader_id = next(k["id"] for k in listed if k["name"] == "reader")
    rotated = run.cli_json("keys", "rotate", reader_id, "--overlap", "0s", "--json")
    where = f"snapshots keys rotate {reader_id} --overlap 0s --json (stdout)"
    cli_rotated = api_key("the API key rotated by the CLI", rotated["secret"], where)
    run.cli("keys", "revoke", made["id"])
    for label, key, status in (
        ("revoked key", api_made, 401),
        ("expired key", reader, 401),
        ("key without the scope", cli_rotated, 403),
        ("key in its overlap, without the scope", api_rotated, 403),
        ("unknown key", "snp_live_" + "x" * 38, 401),
        ("malformed key", "snp_live_nope", 401),
    ):
        with snapshots.api(key) as keyed:
            response = run.http(keyed, "GET", "/v1/invoices", label=label)
            assert response.status_code == status, (label, response.text)
    with httpx.Client(base_url=snapshots.base_url, trust_env=False) as raw:
        headers = {"Authorization": f"Basic {admin}"}
        response = run.http(raw, "GET", "/v1/audit", label="Basic, not Bearer", headers=headers)
        assert response.status_code == 401, response.text

        # 5. Bad signatures; a webhook for no connection.
        body = json.dumps({"id": "evt_leak", "object": "event", "type": "customer.created"})
        path = f"/webhooks/stripe/{connection['id']}"
        for label, signature in (
            ("a malformed signature", "t=1,v1=00"),
            ("a stale signature", f"t=1,v1={_random(32)}"),
            ("no signature", ""),
            ("signed with another secret", _signature(body, wrong_secret)),
            ("signed now with another secret", _signature(body, wrong_secret, now=True)),
        ):
            headers = {"Stripe-Signature": signature}
            response = run.http(raw, "POST", path, label=label, content=body, headers=headers)
            assert response.status_code == 400, response.text
        response = run.http(raw, "POST", "/webhooks/stripe/conn_nope", content=body)
        assert response.status_code == 404, response.text

    # 6. The signing secret rolled: the old one works for the overlap, the new one from now.
    rotate_args = ("--rotate-webhook-secret", second_secret, "--connection", connection["id"])
    run.cli("connect", "stripe", *rotate_args, "--overlap", "1h")
    run.cli("connect", "stripe", *rotate_args, ok=False)  # already in force
    run.cli("connect", "stripe", "--rotate-webhook-secret", "whsec_x", ok=False)
    time.sleep(SECRETS_TTL + 0.5)  # serve re-reads a connection's signing secrets this often
    ls.register_webhook(webhook_url, second_secret)
    client.v1.customers.create({"email": "bea@example.com", "name": "Bea", "metadata": {}})
    eventually(lambda: inbox_settled(api, ls, at_least=5), timeout=APPLY_TIMEOUT)

    # 7. The master key rolled. With a key file, a running serve keeps the old key in memory
    # (it cannot decrypt the secrets any more): it restarts.
    run.cli("rotate-master-key")
    second_master_key = key_file.read_text().strip()
    assert second_master_key != first_master_key
    hidden.append(Secret("the second master key", second_master_key))
    stop(serve.process)
    run.add("snapshots serve log (first run)", serve.log_path.read_text(errors="replace"))
    serve = snapshots.serve()
    client.v1.customers.create({"email": "cyd@example.com", "name": "Cyd", "metadata": {}})
    eventually(lambda: inbox_settled(api, ls, at_least=6), timeout=APPLY_TIMEOUT)

    # 8. Every read: the CLI, then the API; the database and the files while serve runs.
    events = run.cli_json("events", "list", "--json", "--limit", "1000")
    run.cli_all(
        ("connections", "list", "--json"),
        ("connections", "list"),
        ("audit", "--json", "--limit", "1000"),
        ("audit",),
        ("keys", "list", "--json"),
        ("keys", "list"),
        ("events", "list"),
        ("sync", "--status", "--json"),
        ("sync", "--status"),
        ("flows", "versions"),
        *[("events", "show", item["event_id"], "--json") for item in events[:3]],
        *[("events", "show", str(item["id"])) for item in events[:3]],
    )
    for path in (
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/v1/customers",
        "/v1/invoices",
        "/v1/locations",
        "/v1/events",
        "/v1/sync-runs",
        "/v1/api-keys",
        "/v1/audit?limit=100",
        "/v1/flows",
        "/v1/flows/versions?with_text=true",
        "/v1/catalog",
    ):
        response = run.http(api, "GET", path)
        assert response.status_code == 200, (path, response.text)
        found = response.json().get("data", []) if path.startswith("/v1/") else []
        if path.startswith(("/v1/audit", "/v1/flows")):
            continue  # no GET by id
        for item in found[:3]:
            run.http(api, "GET", f"{path}/{item['id']}")
    database = snapshots.home / "snapshots.db"
    dump = dump_database(database)  # while the connection and its encrypted secrets exist
    run.add("the database dump, while serve runs", dump)
    run.files(snapshots.home, "while serve runs", skip=key_files)
    run.cli("connections", "remove", connection["id"])
    run.cli("connections", "list", "--json")

    # 9. Everything the processes logged, the database, every file, once they stopped.
    snapshots.stop_all()
    run.add("snapshots serve log (second run)", serve.log_path.read_text(errors="replace"))
    run.add("the database dump, at the end", dump_database(database))
    run.files(snapshots.home, "at the end", skip=key_files)

    # The scan sees the data: the last-4 forms are where they belong.
    def captured(where: str) -> str:
        return "\n".join(c.text for c in run.captures if c.where.startswith(where))

    def last4(secret: str) -> str:  # `…abcd`, or `\u2026abcd` in JSON
        return rf"(…|\\u2026){re.escape(secret[-4:])}"

    assert re.search(last4(stripe_key), captured("snapshots connections list --json"))
    assert re.search(last4(stripe_key), captured("snapshots connections list (stdout)"))
    assert re.search(last4(second_secret), captured("snapshots audit --json"))
    assert re.search(last4(second_secret), captured(f"snapshots connect stripe {rotate_args[0]}"))
    listed_by_api = captured("GET /v1/api-keys -> 200")
    for key in (admin, api_rotated, cli_rotated):
        assert re.search(re.escape(key[:13]) + last4(key), listed_by_api), key[:13]
    assert "ada@example.com" in dump and "gAAAAA" in dump  # records and Fernet tokens
    assert connection["id"] in dump and "evt_" in dump
    seen = sum(len(c.text) for c in run.captures)
    assert len(run.captures) > 100 and seen > 200_000, (len(run.captures), seen)

    hits = scan(run.captures, hidden)
    assert not hits, f"{len(hits)} secret(s) in clear text:\n" + "\n".join(hits)


def _signature(payload: str, secret: str, *, now: bool = False) -> str:
    timestamp = int(time.time()) if now else 1
    return str(stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp))
