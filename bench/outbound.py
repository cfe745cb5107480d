"""Outbound deliveries: a `snapshots worker` against a bare httpx loop, and the time from a
Stripe event's arrival to the receiver's 200.

    .venv/bin/python -m bench.outbound                    # 20,000 messages, concurrency 10
    .venv/bin/python -m bench.outbound --messages 5000 --rate 200 --seconds 10 --json

1. **Throughput.** A receiver (its own process: uvicorn and a bare ASGI app that answers 200 at
   once) on 127.0.0.1. The baseline signs each body with `standardwebhooks` and posts it with
   one `httpx.Client` from `--concurrency` threads. Then the same number of messages is written
   to a SQLite database as pending deliveries (`delivery.enqueue`, as flows write them) and a
   real `snapshots worker` process (SNAPSHOTS_OUTBOUND_CONCURRENCY = the same concurrency)
   sends them; its rate is the messages over the time from its first attempt to its last
   answer, as the attempts it recorded say.
2. **Latency.** `snapshots serve --no-worker` and a `snapshots worker`, with a flow that sends every
   `invoice.payment_failed` to the receiver; signed webhooks are posted at `--rate` a second for
   `--seconds`; each message carries its event id, and the receiver notes when it came. The
   figure is receiver time minus the time the webhook was posted (one clock: one machine).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import stripe
from cryptography.fernet import Fernet
from standardwebhooks import Webhook

EXECUTABLE = Path(sys.executable).with_name("snapshots")
WEBHOOK_SECRET = "whsec_bench_outbound_0123456789"
FLOWS = """\
flows:
  - name: reminders
    trigger: invoice.payment_failed
    action: send_webhook
    options: {endpoint: bench, type: invoice.reminder}
    fields: {event: $event.id, invoice: id, amount: amount_due}
"""


# -- the receiver (its own process) ----------------------------------------------------------


def receiver_main(port: int, log_path: str) -> None:
    """Answer every request 200 at once; note `<time> <event id>` of messages with one."""
    import uvicorn

    log = open(log_path, "a", buffering=1)  # closed when the process ends

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if b'"event":"' in body:
            start = body.index(b'"event":"') + 9
            event_id = body[start : body.index(b'"', start)].decode()
            log.write(f"{time.time():.6f} {event_id}\n")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0, trust_env=False)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def start_receiver(home: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log = home / "received.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.outbound", "--receiver", str(port), str(log)],
        cwd=Path(__file__).resolve().parent.parent,
    )
    url = f"http://127.0.0.1:{port}/hook"
    wait_for(url)
    return process, url, log


# -- throughput ------------------------------------------------------------------------------


def bodies(count: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "type": "invoice.reminder",
                "timestamp": datetime.now(UTC).isoformat(),
                "data": {"invoice": f"in_bench{n}", "amount": 4200, "email": "x@example.com"},
            },
            separators=(",", ":"),
        ).encode()
        for n in range(count)
    ]


def baseline(url: str, payloads: list[bytes], secret: str, concurrency: int) -> dict[str, float]:
    """A bare httpx loop that signs and posts: messages a second, CPU seconds a message."""
    signer = Webhook(secret)
    with httpx.Client(timeout=15.0, trust_env=False, follow_redirects=False) as client:

        def send(index: int) -> None:
            now = datetime.now(UTC)
            message_id = f"msg_bench{index}"
            payload = payloads[index]
            response = client.post(
                url,
                content=payload,
                headers={
                    "webhook-id": message_id,
                    "webhook-timestamp": str(int(now.timestamp())),
                    "webhook-signature": signer.sign(message_id, now, payload),
                    "content-type": "application/json",
                },
            )
            assert response.status_code == 200

        start, cpu = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(send, range(len(payloads))))
        return {
            "rate": len(payloads) / (time.perf_counter() - start),
            "cpu": (time.process_time() - cpu) / len(payloads),
        }


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def env_for(home: Path, key: str, concurrency: int, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOTS_")}
    env |= {
        "SNAPSHOTS_DATABASE_URL": f"sqlite:///{home / 'snapshots.db'}",
        "SNAPSHOTS_MASTER_KEY": key,
        "SNAPSHOTS_OUTBOUND_ALLOW": "127.0.0.1/32",
        "SNAPSHOTS_OUTBOUND_CONCURRENCY": str(concurrency),
        "SNAPSHOTS_LOCATION_POLL_INTERVAL": "86400",
        "SNAPSHOTS_RECONCILE_INTERVAL": "86400",
    }
    return env | more


def cli(env: dict[str, str], home: Path, *args: str) -> Any:
    done = subprocess.run(
        [str(EXECUTABLE), *args, "--json"] if "--json" not in args else [str(EXECUTABLE), *args],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"snapshots {' '.join(args)} failed: {done.stderr}")
    return json.loads(done.stdout) if done.stdout.strip().startswith(("{", "[")) else done.stdout


def snapshots_worker(url: str, payloads: list[bytes], concurrency: int) -> dict[str, float]:
    from snapshots.outbound import delivery  # the code under test, imported here only

    home = Path(tempfile.mkdtemp(prefix="bench-outbound-"))
    env = env_for(home, Fernet.generate_key().decode(), concurrency)
    subprocess.run([str(EXECUTABLE), "migrate"], cwd=home, env=env, check=True)
    cli(env, home, "endpoints", "create", "--name", "bench", "--url", url, "--json")
    engine = sa.create_engine(env["SNAPSHOTS_DATABASE_URL"])
    with engine.begin() as tx:
        for n, payload in enumerate(payloads):
            delivery.enqueue(
                tx,
                endpoint="bench",
                connection_id="conn_bench",
                event_id=f"evt_bench{n}",
                flow="bench",
                step=0,
                message_type="invoice.reminder",
                data=json.loads(payload)["data"],
            )
    worker = subprocess.Popen([str(EXECUTABLE), "worker"], cwd=home, env=env)
    # CPU a message: from the first success seen (start-up left out) to the last.
    first_seen: tuple[int, float] | None = None
    cpu = 0.0
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                done = conn.exec_driver_sql(
                    "SELECT count(*) FROM deliveries WHERE status = 'succeeded'"
                ).scalar_one()
            if done and first_seen is None:
                first_seen = (done, process_cpu(worker.pid))
            if done >= len(payloads):
                if first_seen is not None and done > first_seen[0]:
                    cpu = (process_cpu(worker.pid) - first_seen[1]) / (done - first_seen[0])
                break
            time.sleep(0.2)
        with engine.connect() as conn:
            first, last = conn.exec_driver_sql(
                "SELECT min(at), max(at + duration) FROM delivery_attempts"
            ).one()
            attempts = conn.exec_driver_sql("SELECT count(*) FROM delivery_attempts").scalar_one()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        engine.dispose()
    return {"rate": len(payloads) / (last - first), "attempts": float(attempts), "cpu": cpu}


# -- latency ---------------------------------------------------------------------------------


def latency(url: str, log: Path, rate: float, seconds: float, concurrency: int) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="bench-outbound-latency-"))
    port = free_port()
    env = env_for(home, Fernet.generate_key().decode(), concurrency)
    subprocess.run([str(EXECUTABLE), "migrate"], cwd=home, env=env, check=True)
    (home / "flows.yaml").write_text(FLOWS)
    cli(env, home, "flows", "import", str(home / "flows.yaml"))
    cli(env, home, "endpoints", "create", "--name", "bench", "--url", url, "--json")
    connection_id = add_connection(env)  # `connect` would ask a Stripe: the row is written here
    # A standalone worker, as a deployment taking 200 events/s runs one (the embedded worker
    # is niced below intake, so under load it catches up only when the webhooks pause).
    serve = subprocess.Popen(
        [str(EXECUTABLE), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-worker"],
        cwd=home,
        env=env,
    )
    worker = subprocess.Popen([str(EXECUTABLE), "worker"], cwd=home, env=env)
    sent: dict[str, float] = {}
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz")
        total = int(rate * seconds)
        template = json.dumps(
            {
                "id": "EVENT",
                "object": "event",
                "api_version": "2026-07-29.dahlia",
                "created": int(time.time()),
                "data": {"object": {"id": "in_lat", "object": "invoice", "amount_due": 4200}},
                "livemode": False,
                "type": "invoice.payment_failed",
            }
        )
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:

            def post(n: int) -> None:
                pause = start + n / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                event_id = f"evt_lat{n:06d}"
                payload = template.replace("EVENT", event_id)
                header = stripe.WebhookSignature.generate_signature_header(payload, WEBHOOK_SECRET)
                sent[event_id] = time.time()
                response = http.post(
                    f"/webhooks/stripe/{connection_id}",
                    content=payload.encode(),
                    headers={"Stripe-Signature": header, "Content-Type": "application/json"},
                )
                assert response.status_code == 200, response.text

            start = time.monotonic()
            with ThreadPoolExecutor(32) as pool:  # paced: each post waits for its moment
                list(pool.map(post, range(total)))
            offered = total / (time.monotonic() - start)
        deadline = time.monotonic() + 120
        arrived: dict[str, float] = {}
        while time.monotonic() < deadline and len(arrived) < total:
            time.sleep(0.5)
            for line in log.read_text().splitlines():
                moment, event_id = line.split()
                if event_id in sent:
                    arrived.setdefault(event_id, float(moment))
    finally:
        for process in (worker, serve):
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    delays = sorted(arrived[e] - sent[e] for e in arrived)
    quantiles = statistics.quantiles(delays, n=100)
    return {
        "offered_rate": offered,
        "delivered": float(len(delays)),
        "sent": float(total),
        "p50": quantiles[49],
        "p99": quantiles[98],
    }


def add_connection(env: dict[str, str]) -> str:
    """A connection row as `connect` writes it (no Stripe to ask in a benchmark)."""
    from snapshots import connections, stripe_api, vault
    from snapshots.settings import Settings
    from snapshots.store.db import Database

    settings = Settings(
        database_url=env["SNAPSHOTS_DATABASE_URL"], master_key=env["SNAPSHOTS_MASTER_KEY"]
    )
    database = Database(settings.database_url)
    account = stripe_api.Account(
        id="acct_bench", livemode=False, default_currency="usd", country="US"
    )
    with database.write() as tx:
        made = connections.add(
            tx,
            vault.load(settings),
            account=account,
            secret_key="sk_test_bench1234",
            webhook_secrets=[WEBHOOK_SECRET],
            name="bench",
            api_base="http://127.0.0.1:9",  # nothing listens: its pulls fail at once, locally
        )
    database.dispose()
    return made.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200.0, help="events a second (latency)")
    parser.add_argument("--seconds", type=float, default=10.0, help="of events (latency)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--receiver", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        receiver_main(int(args.receiver[0]), args.receiver[1])
        return
    home = Path(tempfile.mkdtemp(prefix="bench-outbound-receiver-"))
    receiver, url, log = start_receiver(home)
    try:
        payloads = bodies(args.messages)
        load = os.getloadavg()[0]
        secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        base = baseline(url, payloads, secret, args.concurrency)
        worker = snapshots_worker(url, payloads, args.concurrency)
        late = latency(url, log, args.rate, args.seconds, args.concurrency)
    finally:
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(10)
    figures = {
        "messages": args.messages,
        "concurrency": args.concurrency,
        "baseline_per_second": round(base["rate"], 1),
        "snapshots_per_second": round(worker["rate"], 1),
        "ratio": round(worker["rate"] / base["rate"], 3),
        "baseline_cpu_ms_per_message": round(base["cpu"] * 1000, 3),
        "snapshots_cpu_ms_per_message": round(worker["cpu"] * 1000, 3),
        "load_average": round(load, 1),
        "attempts": int(worker["attempts"]),
        "latency_offered_rate": round(late["offered_rate"], 1),
        "latency_delivered": int(late["delivered"]),
        "latency_sent": int(late["sent"]),
        "latency_p50_ms": round(late["p50"] * 1000, 1),
        "latency_p99_ms": round(late["p99"] * 1000, 1),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{args.messages:,} messages to a local receiver, concurrency {args.concurrency}")
    print(f"  (load average {load:.1f} when it began)")
    print(
        f"  bare httpx loop (sign + post):   {base['rate']:8.1f} /s, "
        f"{base['cpu'] * 1000:.3f} ms of CPU a message"
    )
    print(
        f"  snapshots worker:                {worker['rate']:8.1f} /s, "
        f"{worker['cpu'] * 1000:.3f} ms of CPU a message"
    )
    print(f"  ratio:                           {worker['rate'] / base['rate']:8.3f}")
    print(
        f"Stripe event -> receiver's 200 at {late['offered_rate']:.0f} events/s "
        f"({int(late['delivered'])}/{int(late['sent'])} delivered): "
        f"p50 {late['p50'] * 1000:.1f} ms, p99 {late['p99'] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
