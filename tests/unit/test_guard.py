"""The SSRF guard's verdicts, with an injected resolver (no lookup, no connection)."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from snapshots import errors
from snapshots.outbound import guard

NONE = guard.Allow()


def resolver(*answers: str) -> guard.Resolver:
    def resolve(host: str, port: int) -> list[str]:
        return list(answers)

    return resolve


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("10.0.0.5", id="private"),
        pytest.param("172.16.3.4", id="private-172"),
        pytest.param("192.168.1.1", id="private-192"),
        pytest.param("169.254.169.254", id="metadata"),
        pytest.param("127.0.0.1", id="loopback"),
        pytest.param("127.9.9.9", id="loopback-range"),
        pytest.param("0.0.0.0", id="unspecified"),
        pytest.param("::", id="unspecified-v6"),
        pytest.param("::1", id="loopback-v6"),
        pytest.param("::ffff:127.0.0.1", id="mapped-loopback"),
        pytest.param("::ffff:10.0.0.5", id="mapped-private"),
        pytest.param("::ffff:169.254.169.254", id="mapped-metadata"),
        pytest.param("2002:7f00:1::", id="6to4-loopback"),
        pytest.param("64:ff9b::a00:5", id="nat64-private"),
        pytest.param("fe80::1", id="link-local-v6"),
        pytest.param("fd00::1", id="unique-local"),
        pytest.param("ff02::1", id="multicast-v6"),
        pytest.param("224.0.0.1", id="multicast"),
        pytest.param("100.64.0.1", id="shared-cgnat"),
        pytest.param("240.0.0.1", id="reserved"),
    ],
)
def test_refused_addresses(address: str) -> None:
    assert guard.refusal(ipaddress.ip_address(address)) is not None
    with pytest.raises(guard.Blocked):
        guard.check("https://hooks.example/x", allow=NONE, resolver=resolver(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
def test_public_addresses_pass(address: str) -> None:
    target = guard.check("https://hooks.example:8443/x", allow=NONE, resolver=resolver(address))
    assert (target.host, target.port, target.address) == ("hooks.example", 8443, address)


def test_every_address_is_checked_not_just_the_first() -> None:
    with pytest.raises(guard.Blocked, match=r"127\.0\.0\.1"):
        guard.check(
            "https://rebind.example/", allow=NONE, resolver=resolver("93.184.216.34", "127.0.0.1")
        )


def test_literal_addresses_are_checked_without_a_lookup() -> None:
    def no_lookup(host: str, port: int) -> list[str]:
        raise AssertionError("a literal address needs no lookup")

    with pytest.raises(guard.Blocked):
        guard.check("http://[::ffff:127.0.0.1]:8080/", allow=NONE, resolver=no_lookup)
    with pytest.raises(guard.Blocked):
        guard.check("http://0.0.0.0/", allow=NONE, resolver=no_lookup)


def test_a_failed_lookup_fails_closed() -> None:
    def broken(host: str, port: int) -> list[str]:
        raise guard.Blocked(f"cannot resolve {host}", kind="dns")

    with pytest.raises(guard.Blocked) as caught:
        guard.check("https://nowhere.example/", allow=NONE, resolver=broken)
    assert caught.value.kind == "dns"
    with pytest.raises(guard.Blocked):
        guard.check("https://empty.example/", allow=NONE, resolver=resolver())


def test_the_allow_list_is_the_only_exception() -> None:
    allow = guard.Allow.parse("127.0.0.1/32, internal.example")
    assert guard.check("http://127.0.0.1:9/", allow=allow).address == "127.0.0.1"
    with pytest.raises(guard.Blocked):  # 127.0.0.2 is not in 127.0.0.1/32
        guard.check("http://127.0.0.2:9/", allow=allow)
    found = guard.check("http://internal.example/", allow=allow, resolver=resolver("10.0.0.5"))
    assert found.address == "10.0.0.5"


@pytest.mark.parametrize(
    "url",
    ["ftp://x.example/", "https:///nohost", "http://user:pw@x.example/", "not a url", "x" * 3000],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(errors.BadRequest):
        guard.check(url, allow=NONE, resolver=resolver("93.184.216.34"))


def test_the_transport_connects_to_the_checked_address_with_host_and_sni() -> None:
    seen: list[httpx.Request] = []

    def connector() -> httpx.BaseTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200)

        return httpx.MockTransport(handle)

    answers = iter([["93.184.216.34"], ["127.0.0.1"]])  # a rebinding resolver

    def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    transport = guard.GuardedTransport(allow=NONE, resolver=rebinding, connector=connector)
    with httpx.Client(transport=transport) as client:
        response = client.post("https://hooks.example/in?x=1", content=b"{}")
        assert response.extensions["snapshots_address"] == "93.184.216.34"
        with pytest.raises(guard.Blocked):  # the second lookup answers loopback: refused
            client.post("https://hooks.example/in", content=b"{}")
    assert len(seen) == 1
    request = seen[0]
    assert request.url.host == "93.184.216.34"
    assert request.url.path == "/in" and request.url.query == b"x=1"
    assert request.headers["host"] == "hooks.example"
    assert request.extensions["sni_hostname"] == "hooks.example"
