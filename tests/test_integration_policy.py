"""EdgePolicy in front of the real UserAgent core, over real UDP sockets on 127.0.0.1.

The Server does not consult the policy yet (its wiring is pending), so this test puts the
policy in front of :class:`~sipagent.useragent.UserAgent` in a thin asyncio responder
built the way ``Server._on_message`` is meant to use it: ``check_datagram`` before the
core parses anything, :func:`~sipagent.policy.refusal` for the rare answered refusal.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import cast

from sipagent.message import Response, parse_message
from sipagent.policy import Action, EdgePolicy, EdgePolicyConfig, refusal
from sipagent.transaction import Destination
from sipagent.useragent import UserAgent

LOCALHOST = "127.0.0.1"
_branches = itertools.count(1)


class PolicedResponder(asyncio.DatagramProtocol):
    """A UAS on one UDP socket: policy first, then the sans-I/O core."""

    def __init__(self, policy: EdgePolicy) -> None:
        self.policy = policy
        self.ua = UserAgent(
            host=LOCALHOST, port=0, public_host=LOCALHOST, new_token=lambda: secrets.token_hex(6)
        )
        self.verdicts: Counter[Action] = Counter()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.ua.port = self.transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        assert self.transport is not None
        now = asyncio.get_running_loop().time()
        host, port = str(addr[0]), int(addr[1])
        verdict = self.policy.check_datagram(host, now)
        self.verdicts[verdict.action] += 1
        source = Destination("udp", host, port)
        if verdict.action is Action.ALLOW:
            self.ua.receive(data, source, now)
            for out, destination in self.ua.messages_to_send():
                self.transport.sendto(out, (destination.host, destination.port))
        elif verdict.action is Action.REJECT:
            answer = refusal(data, source, verdict, to_tag=secrets.token_hex(6), server="test")
            if answer is not None:
                out, destination = answer
                self.transport.sendto(out, (destination.host, destination.port))


class Client(asyncio.DatagramProtocol):
    """A peer socket that sends OPTIONS and keeps every response it gets."""

    def __init__(self) -> None:
        self.responses: list[Response] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.host = LOCALHOST
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.host, self.port = self.transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        message = parse_message(data)
        assert isinstance(message, Response)
        self.responses.append(message)

    def send_options(self, server_port: int) -> None:
        assert self.transport is not None
        n = next(_branches)
        data = (
            f"OPTIONS sip:agent@{LOCALHOST}:{server_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK-flood-{n};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:flood@{LOCALHOST}>;tag=f{n}\r\n"
            f"To: <sip:agent@{LOCALHOST}>\r\n"
            f"Call-ID: flood-{n}@{LOCALHOST}\r\n"
            f"CSeq: {n} OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        self.transport.sendto(data, (LOCALHOST, server_port))

    def statuses(self) -> Counter[int]:
        return Counter(response.status for response in self.responses)


#: Linux answers on all of 127.0.0.0/8: a second loopback address is a second source.
OTHER_HOST = "127.0.0.2"

Started = tuple[PolicedResponder, int, Callable[..., Awaitable[Client]]]


@asynccontextmanager
async def responder(config: EdgePolicyConfig) -> AsyncIterator[Started]:
    """A policed responder on a free port, and a factory of client sockets."""
    loop = asyncio.get_running_loop()
    transports: list[asyncio.DatagramTransport] = []
    server_transport, server = await loop.create_datagram_endpoint(
        lambda: PolicedResponder(EdgePolicy(config)), local_addr=(LOCALHOST, 0)
    )
    transports.append(server_transport)

    async def new_client(host: str = LOCALHOST) -> Client:
        transport, client = await loop.create_datagram_endpoint(Client, local_addr=(host, 0))
        transports.append(transport)
        return client

    try:
        yield server, server.ua.port, new_client
    finally:
        for transport in transports:
            transport.close()


async def settle(client: Client, *, quiet: float = 0.2, limit: float = 3.0) -> None:
    """Wait until no response arrived for ``quiet`` seconds (at most ``limit``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    seen = -1
    while len(client.responses) != seen and loop.time() < deadline:
        seen = len(client.responses)
        await asyncio.sleep(quiet)


async def test_a_flood_from_one_source_is_cut_to_the_burst() -> None:
    # Loopback is exempt by default; here 127.0.0.1 plays an outside source.
    config = EdgePolicyConfig(exempt_cidrs=())
    async with responder(config) as (server, port, new_client):
        flooder = await new_client()
        loop = asyncio.get_running_loop()
        started = loop.time()
        for batch in range(20):  # 500 OPTIONS, in batches the socket buffer can hold
            for _ in range(25):
                flooder.send_options(port)
            await asyncio.sleep(0.002 if batch < 19 else 0)
        elapsed = loop.time() - started
        await settle(flooder)

        assert sum(server.verdicts.values()) == 500, server.verdicts
        statuses = flooder.statuses()
        refilled = math.ceil(config.rate_limit * elapsed)
        assert config.rate_burst <= statuses[200] <= config.rate_burst + refilled, statuses
        # One 503 + Retry-After per second of flood, the rest dropped without a parse.
        assert 1 <= statuses[503] <= 1 + math.floor(elapsed), statuses
        assert set(statuses) == {200, 503}
        busy = next(r for r in flooder.responses if r.status == 503)
        assert busy.headers.get("Retry-After") is not None
        assert server.verdicts[Action.DROP] == 500 - statuses[200] - statuses[503]
        assert server.ua.counters["rx_OPTIONS"] == statuses[200]  # the core saw only those
        assert server.policy.counters["rate_limited"] == 500 - statuses[200]

        # Another source is answered while the flooder is still limited.
        other = await new_client(OTHER_HOST)
        for _ in range(5):
            other.send_options(port)
        await settle(other)
        assert other.statuses() == Counter({200: 5})
        before = len(flooder.responses)
        flooder.send_options(port)
        await settle(flooder, quiet=0.1, limit=0.5)
        assert len(flooder.responses) - before <= 1  # at most the once-a-second 503


async def test_loopback_is_exempt_by_default() -> None:
    async with responder(EdgePolicyConfig()) as (server, port, new_client):
        client = await new_client()
        for batch in range(4):
            for _ in range(25):
                client.send_options(port)
            await asyncio.sleep(0.002 if batch < 3 else 0)
        await settle(client)
        assert client.statuses() == Counter({200: 100})
        assert server.verdicts == Counter({Action.ALLOW: 100})


async def test_sources_off_the_allow_list_get_silence_or_403() -> None:
    silent = EdgePolicyConfig(allow_cidrs=("192.0.2.0/24",))
    async with responder(silent) as (server, port, new_client):
        client = await new_client()
        for _ in range(3):
            client.send_options(port)
        await settle(client, quiet=0.3)
        assert client.responses == []
        assert server.verdicts == Counter({Action.DROP: 3})
        assert server.ua.counters["rx_OPTIONS"] == 0

    loud = EdgePolicyConfig(allow_cidrs=("192.0.2.0/24",), drop_unknown_sources=False)
    async with responder(loud) as (server, port, new_client):
        client = await new_client()
        for _ in range(3):
            client.send_options(port)
        await settle(client)
        assert client.statuses() == Counter({403: 3})
        assert all(r.to.tag for r in client.responses)
        assert server.ua.counters["rx_OPTIONS"] == 0

    allowed = EdgePolicyConfig(allow_cidrs=("127.0.0.0/8",))
    async with responder(allowed) as (_server, port, new_client):
        client = await new_client()
        client.send_options(port)
        await settle(client)
        assert client.statuses() == Counter({200: 1})
