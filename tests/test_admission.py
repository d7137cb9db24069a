"""Who a connection is from, and whether it is taken: the client's address behind trusted
proxies, and the caps per address and in all (pure, no sockets)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vidstream.core.admission import Admission, Refusal, bucket, client_address, networks
from vidstream.core.errors import ConfigError
from vidstream.core.settings import Settings

LOOPBACK = networks(["127.0.0.1", "::1"])
PRIVATE = networks(["10.0.0.0/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "proxies", "client"),
    [
        ("203.0.113.9", ["198.51.100.1"], (), "203.0.113.9"),  # no proxy trusted: the peer
        ("203.0.113.9", ["198.51.100.1"], LOOPBACK, "203.0.113.9"),  # an untrusted peer's header
        ("127.0.0.1", ["198.51.100.1"], LOOPBACK, "198.51.100.1"),
        ("127.0.0.1", [], LOOPBACK, "127.0.0.1"),  # the proxy's own request
        # What the client wrote itself (left) is never believed; nginx appended the right end.
        ("127.0.0.1", ["6.6.6.6, 198.51.100.1"], LOOPBACK, "198.51.100.1"),
        ("127.0.0.1", ["6.6.6.6", "198.51.100.1"], LOOPBACK, "198.51.100.1"),  # two headers
        # Two trusted hops (a load balancer, then nginx): past both.
        ("10.0.0.2", ["6.6.6.6, 198.51.100.1, 10.0.0.7"], PRIVATE, "198.51.100.1"),
        ("::ffff:127.0.0.1", ["198.51.100.1"], LOOPBACK, "198.51.100.1"),  # dual-stack socket
        ("::1", ["[2001:db8::5]:4711"], LOOPBACK, "2001:db8::5"),
        ("127.0.0.1", ["198.51.100.1:443"], LOOPBACK, "198.51.100.1"),
        ("127.0.0.1", ["unknown"], LOOPBACK, "127.0.0.1"),  # no address: the proxy's is kept
        ("127.0.0.1", ["198.51.100.1, garbage"], LOOPBACK, "127.0.0.1"),
        (None, ["198.51.100.1"], LOOPBACK, "?"),
    ],
)
def test_client_address(
    peer: str | None, forwarded: list[str], proxies: tuple[ipaddress.IPv4Network, ...], client: str
) -> None:
    """The client is the peer, or behind trusted proxies the first untrusted hop from the right."""
    assert client_address(peer, forwarded, proxies) == client


_octets = st.tuples(*[st.integers(0, 255)] * 4).map(lambda o: ".".join(map(str, o)))
public = _octets.filter(lambda a: ipaddress.ip_address(a) not in PRIVATE[0])
proxy_hops = st.lists(st.integers(1, 2**24 - 2).map(lambda n: str(PRIVATE[0][n])), max_size=4)


@given(written=st.lists(st.text(max_size=40), max_size=5), client=public, hops=proxy_hops,
       peer=st.integers(1, 2**24 - 2))  # fmt: skip
def test_a_client_cannot_choose_its_address(
    written: list[str], client: str, hops: list[str], peer: int
) -> None:
    """Whatever a client writes into X-Forwarded-For, behind any chain of trusted proxies the
    address found is the one the outermost proxy saw."""
    header = ", ".join([*written, client, *hops])
    assert client_address(str(PRIVATE[0][peer]), [header], PRIVATE) == client


def test_ipv6_clients_count_per_64() -> None:
    """Addresses of one IPv6 /64 share one count; IPv4 addresses each have their own."""
    assert bucket("2001:db8:1:2::1") == bucket("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert bucket("2001:db8:1:3::1") != bucket("2001:db8:1:2::1")
    assert bucket("198.51.100.1") == "198.51.100.1"


def test_caps_per_address_and_in_all() -> None:
    """Past the per-address cap an address is refused while others are taken; past the total
    cap everyone is; released slots make room again, and a trusted proxy counts only in all."""
    admission = Admission(cap=4, address_cap=2, proxies=LOOPBACK)
    a1, a2 = admission.admit("198.51.100.1"), admission.admit("198.51.100.1")
    assert admission.admit("198.51.100.1") is Refusal.ADDRESS
    b = admission.admit("198.51.100.2")
    proxy = admission.admit("127.0.0.1")
    assert admission.admit("198.51.100.3") is Refusal.FULL
    for slot in (a1, a2, b, proxy):
        assert not isinstance(slot, Refusal)
    a1.release()
    a1.release()  # twice is once
    assert admission.total == 3 and admission.per_address["198.51.100.1"] == 1
    # A proxied connection counts for its client once the request names it.
    assert proxy.claim("198.51.100.2") is None
    again = admission.admit("198.51.100.2")
    assert again is Refusal.ADDRESS


def test_trusted_proxies_must_be_addresses() -> None:
    """A TRUSTED_PROXIES entry that is not an address or network stops start-up, named."""
    assert Settings(trusted_proxies=("127.0.0.1", "10.0.0.0/8", "::1")).proxies
    with pytest.raises(ConfigError, match=r"TRUSTED_PROXIES.*nginx\.local"):
        Settings(trusted_proxies=("nginx.local",))
