"""The asyncio shell around one :class:`~sipagent.registration.Registration`.

Thin, like the server's shell around the user agent: it sends what the core queued over
the server's :class:`~sipagent.transport.SipTransport`, keeps the core's one timer armed
with ``loop.call_at(get_timer())``, hands the core the responses the user agent did not
claim, and reports a REGISTER that could not leave (connection refused, name not
resolved, ``sendto`` failed) to :meth:`Registration.transport_error` at once, so the
backoff starts then rather than when the transaction times out (32 s later)::

    registering = Registering.from_settings(settings, transport, public_host, now=loop.time())
    ua.on_other_response = registering.receive_response
    registering.start()
    ...
    await registering.stop()   # un-REGISTER, waiting a little for the registrar's answer
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import secrets
import socket

from .headers import SipUri
from .message import Response
from .registration import Registration, RegState
from .settings import Settings
from .transaction import Destination
from .transport import SipTransport

__all__ = ["Registering", "describe_send_error", "registration_from_settings"]

logger = logging.getLogger(__name__)

#: Seconds stop() waits for the registrar to confirm the un-REGISTER.
UNREGISTER_TIMEOUT = 2.0
#: How often stop() looks whether the un-REGISTER was answered.
_UNREGISTER_POLL = 0.05


def registration_from_settings(
    settings: Settings,
    *,
    public_host: str,
    port: int,
    tls_port: int | None,
    now: float,
) -> Registration:
    """The binding SIPAGENT_REGISTRAR & co. ask for, with our Contact at ``public_host``."""
    assert settings.registrar is not None and settings.registrar_user is not None
    assert settings.registrar_password is not None
    registrar = SipUri.parse(settings.registrar)
    transport = registrar.transport
    host = f"[{public_host}]" if ":" in public_host else public_host
    local_port = tls_port if transport == "tls" and tls_port is not None else port
    scheme = "sips" if registrar.scheme == "sips" else "sip"
    suffix = "" if transport == "udp" or scheme == "sips" else f";transport={transport}"
    user = settings.registrar_user
    return Registration(
        settings.registrar,
        f"sip:{user}@{registrar.host}",
        user,
        settings.registrar_password.get_secret_value(),
        contact=f"<{scheme}:{user}@{host}:{local_port}{suffix}>",
        expires=settings.registrar_expires,
        outbound_proxy=settings.outbound_proxy,
        transport=transport,
        local_sent_by=f"{host}:{local_port}",
        new_token=lambda: secrets.token_hex(6),
        now=now,
        random=random.random,
        user_agent=settings.user_agent,
    )


def describe_send_error(error: Exception, destination: Destination) -> str:
    """One line for ``last_error``: what failed, and where we were sending."""
    if isinstance(error, socket.gaierror):
        what = f"cannot resolve {destination.host}: {error.strerror or error}"
    elif isinstance(error, OSError) and error.errno:
        # asyncio's strerror reads "Connect call failed (...)": the errno says what failed.
        what = os.strerror(error.errno)
    else:
        what = str(error) or type(error).__name__
    where = f"{destination.transport} {destination.host}:{destination.port}"
    return f"transport error: {what} ({where})"


class Registering:
    """Keeps one registration going over ``transport``, with a timer of its own."""

    def __init__(self, registration: Registration, transport: SipTransport) -> None:
        self.registration = registration
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False

    @classmethod
    def from_settings(
        cls, settings: Settings, transport: SipTransport, public_host: str
    ) -> Registering:
        """The registration the settings ask for, from ``transport``'s ports."""
        registration = registration_from_settings(
            settings, public_host=public_host, port=transport.port,
            tls_port=transport.tls_port, now=asyncio.get_running_loop().time(),
        )
        return cls(registration, transport)

    def start(self) -> None:
        """Send the first REGISTER (due since the registration was made)."""
        self._stopped = False
        self._pump()

    def receive_response(self, response: Response, now: float) -> bool:
        """For ``UserAgent.on_other_response``: True when it answered one of our REGISTERs."""
        if not self.registration.receive_response(response, now):
            return False
        self._pump()
        return True

    async def stop(self, timeout: float = UNREGISTER_TIMEOUT) -> None:
        """Remove our binding (``Expires: 0``), waiting up to ``timeout`` for the answer."""
        registration = self.registration
        if registration.state is not RegState.UNREGISTERED:
            registration.unregister(self._loop.time())
            self._pump()
            deadline = self._loop.time() + timeout
            while not _unregistered(registration) and self._loop.time() < deadline:
                await asyncio.sleep(_UNREGISTER_POLL)
        self._stopped = True
        self._cancel_timer()

    # -- the shell ------------------------------------------------------------------------
    def _pump(self) -> None:
        """Send what the core queued and re-arm its timer."""
        for data, destination in self.registration.messages_to_send():
            on_error = functools.partial(self._send_failed, destination=destination)
            self.transport.send(data, destination, on_error)
        self._cancel_timer()
        deadline = self.registration.get_timer()
        if deadline is not None and not self._stopped:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _send_failed(self, error: Exception, destination: Destination) -> None:
        if self._stopped:
            return
        reason = describe_send_error(error, destination)
        logger.warning("REGISTER to %s could not be sent: %s", destination, reason)
        self.registration.transport_error(self._loop.time(), reason)
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        self.registration.handle_timer(self._loop.time())
        self._pump()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _unregistered(registration: Registration) -> bool:
    """A function, so the state is read again on every turn of the wait loop."""
    return registration.state is RegState.UNREGISTERED
