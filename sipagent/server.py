"""The asyncio shell around the SIP core: transports, timer, calls, admin.

One :class:`Server` per process: it feeds datagrams to the
:class:`~sipagent.useragent.UserAgent` core, sends what the core returns, keeps the core's
one timer armed with ``loop.call_at``, and turns the core's events into
:class:`~sipagent.call.Call` objects (policy, SDP, RTP, model). It also is the admin's
:class:`~admin.app.CallController`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import ssl
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from bridge import CallContext, ModelSession, create_model
from rtp.endpoint import PortAllocator, TickGroups, reserve_port_pair

from .auth import DigestVerifier
from .call import Call, ObservationHandler
from .dialog import Dialog, DialogState
from .events import (
    CallConfirmed,
    CallEnded,
    IncomingCall,
    InfoReceived,
    OfferReceived,
    TransferAccepted,
    TransferProgress,
    TransferRejected,
)
from .exceptions import RemoteProtocolError
from .headers import NameAddress, SipUri, split_header_values
from .logs import bind_session, call_context, detached_context, sniff_call_id
from .message import Request
from .offer_answer import Negotiated, SrtpPolicy, accept_answer, make_offer, negotiate
from .policy import Action, EdgePolicy, EdgePolicyConfig, SourceAllowList, dialled_users, refusal
from .recording import RecordingOptions
from .registering import Registering
from .registration import Registration, RegState
from .registry import CallRecord, CallRegistry
from .sdp import PCMA, PCMU, SessionDescription
from .settings import ConfigError, Settings, env_name, parse_auth_users
from .transaction import Destination
from .transport import SipTransport, TlsConfig
from .useragent import UserAgent

if TYPE_CHECKING:
    from bridge.agents import AgentDirectory
    from bridge.tools import ToolAdapter

__all__ = ["Server", "parse_dtmf_relay"]

logger = logging.getLogger(__name__)

#: The least time the model may take to become ready before the caller hears the fallback
#: prompt instead; the ``realtime_open_timeout`` setting (plus OPEN_MARGIN) raises it.
MODEL_READY_TIMEOUT = 5.0
#: Extra time over the model's own open timeout, so the model reports why it failed.
OPEN_MARGIN = 1.0
#: Send 180 Ringing when the model is not ready after this long.
RING_AFTER = 0.2
RETRY_AFTER = "5"
STATS_INTERVAL = 1.0
"""Seconds between two copies of a call's RTP counters into its record (/sessions)."""
STATS_SLICES = 10
"""The copies of one round are spread over this many slices of the interval."""
#: Failed digest attempts from one source before it gets 403 instead of a challenge.
AUTH_FAILURES_BEFORE_403 = 10


def parse_dtmf_relay(body: bytes) -> str | None:
    """The digit of an ``application/dtmf-relay`` INFO body (``Signal=5``)."""
    for line in body.decode("utf-8", "replace").splitlines():
        name, _, value = line.partition("=")
        if name.strip().lower() == "signal":
            digit = value.strip().upper()
            if len(digit) == 1 and digit in "0123456789*#ABCD":
                return digit
            if digit in ("10", "11"):
                return "*" if digit == "10" else "#"
    return None


def _unavailable_reason(exc: BaseException) -> tuple[str, str]:
    """(one word, description) of why a model session could not be opened."""
    detail = str(exc) or type(exc).__name__
    reason = getattr(exc, "reason", None)  # RealtimeConnectError, without importing the SDK
    if isinstance(reason, str) and reason:
        return reason, detail
    if isinstance(exc, TimeoutError):
        return "timeout", "the model did not become ready in time"
    return "error", detail


class _PendingTransfer:
    """A REFER we sent: where to, why, and who waits for the peer's answer."""

    def __init__(
        self,
        *,
        target: str,
        reason: str,
        hang_up_on_failure: bool = False,
        on_failed: Callable[[str], None] | None = None,
    ) -> None:
        self.target = target
        self.reason = reason
        self.hang_up_on_failure = hang_up_on_failure
        self.on_failed = on_failed
        """Told why, when the transfer fails after the peer accepted the REFER."""
        self.accepted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def settle(self, accepted: bool) -> None:
        if not self.accepted.done():
            self.accepted.set_result(accepted)


class Server:
    """A running sipagent: SIP transports, calls, RTP ports and the admin API.

    ``tools`` is offered to every call's model (the ``openai`` model calls them).
    """

    def __init__(
        self,
        settings: Settings,
        registry: CallRegistry | None = None,
        *,
        tools: ToolAdapter | None = None,
    ) -> None:
        self.settings = settings
        self.tools = tools
        self.agents: AgentDirectory | None = None
        """The agents the openai model serves (loaded by start() when no tools are given)."""
        self.model_ready_timeout = max(
            MODEL_READY_TIMEOUT, settings.realtime_open_timeout + OPEN_MARGIN
        )
        """Seconds the model may take to open while the call rings."""
        self.registry = registry or CallRegistry()
        self.public_host = settings.effective_public_host
        self.ua = UserAgent(
            host=settings.sip_host,
            port=settings.sip_port,
            public_host=self.public_host,
            new_token=lambda: secrets.token_hex(6),
            user_agent=settings.user_agent,
        )
        self.ua.admission = self._admit
        # A TCP connection may carry a live call with no SIP traffic for a long time: only
        # close it when idle for longer than any reasonable call.
        tls = None
        if settings.tls_cert is not None and settings.tls_port:
            tls = TlsConfig(
                certfile=settings.tls_cert,
                keyfile=settings.tls_key,
                port=settings.tls_port,
                cafile=settings.tls_ca,
                verify_server=settings.tls_verify_peer,
                require_client_cert=settings.tls_require_client_cert,
            )
        self.transport = SipTransport(
            settings.sip_host, settings.sip_port, self._on_message,
            tcp_idle_timeout=4 * 3600.0, tls=tls,
        )
        self.ports = PortAllocator(settings.rtp_port_min, settings.rtp_port_max)
        self.ticks = TickGroups()
        """Where each call's 20 ms tick falls in the frame (spread, not all together), and one
        timer per millisecond of the frame running them."""
        config = EdgePolicyConfig.from_settings(settings)
        self.verifier: DigestVerifier | None = None
        """Digest check of inbound calls from untrusted sources (SIPAGENT_AUTH_USERS)."""
        self.trusted: SourceAllowList | None = None
        if settings.auth_users is not None:
            # With users to authenticate, the allow-list names the sources trusted without a
            # challenge (the carrier); everyone else may call with credentials.
            allow_list = EdgePolicy(config).allow_list
            self.trusted = None if allow_list.allows_all else allow_list
            config = dataclasses.replace(config, allow_cidrs=(), allow_preset=None)
            self.verifier = DigestVerifier(
                self.public_host,
                parse_auth_users(settings.auth_users.get_secret_value()),
                secret=secrets.token_bytes(32),
                new_token=lambda: secrets.token_hex(8),
            )
        self.policy = EdgePolicy(config)
        self.srtp = SrtpPolicy(settings.srtp)
        """Whether calls use SRTP (SDES keys in the SDP)."""
        self.registration: Registration | None = None
        """Our registration with SIPAGENT_REGISTRAR, created by start()."""
        self._registering: Registering | None = None
        """The asyncio shell that keeps ``registration`` going."""
        self.calls: dict[Dialog, Call] = {}
        self._transfers: dict[Dialog, _PendingTransfer] = {}
        self.draining = False
        self._timer: asyncio.TimerHandle | None = None
        # Its deadline: uvloop's call_at may return a plain Handle, without when().
        self._timer_when: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats_task: asyncio.Task[None] | None = None
        self.recordings: RecordingOptions | None = None
        """Where calls are recorded (SIPAGENT_RECORDINGS_DIR), set by start(); None: off."""

    # -- lifecycle --------------------------------------------------------------------------
    def load_agents(self) -> None:
        """Load the agent definitions; a broken file stops start-up with one line."""
        if self.settings.model != "openai" or self.tools is not None:
            return
        from bridge.agents import AgentConfigError, AgentDirectory

        try:
            self.agents = AgentDirectory.load(self.settings.agents_path)
        except AgentConfigError as exc:
            raise ConfigError(f"{env_name('agents_path')}: {exc}") from None

    async def start(self) -> None:
        self.load_agents()
        self.recordings = RecordingOptions.from_settings(self.settings)
        await self._start_transports()
        if self.settings.registrar is not None:
            self._registering = Registering.from_settings(
                self.settings, self.transport, self.public_host
            )
            self.registration = self._registering.registration
            self.ua.on_other_response = self._registering.receive_response
            self._registering.start()

    def registrations(self) -> list[dict[str, object]]:
        """State of our registrations, for GET /registrations."""
        if self.registration is None:
            return []
        return [self.registration.status(self._now())]

    async def _start_transports(self) -> None:
        try:
            await self.transport.start()
        except (ssl.SSLError, FileNotFoundError) as exc:
            setting = env_name("tls_cert")
            raise ConfigError(f"{setting}: unusable certificate or key ({exc})") from None
        self.ua.port = self.transport.port
        self.ua.tls_port = self.transport.tls_port
        self._stats_task = asyncio.get_running_loop().create_task(self._refresh_stats())
        logger.info(
            "SIP listening on %s:%d (UDP, TCP)%s, model %s",
            self.settings.sip_host, self.transport.port,
            f", TLS on {self.transport.tls_port}" if self.transport.tls_port else "",
            self.settings.model,
        )

    async def stop(self, drain_timeout: float = 0.0) -> None:
        """Refuse new calls, hang up the live ones (after up to ``drain_timeout``), close."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        while self.calls and loop.time() < deadline:
            await asyncio.sleep(0.1)
        for call in list(self.calls.values()):
            self._hangup(call, "shutdown")
        # Give the BYEs a moment to leave and their 200s to come back.
        for _ in range(20):
            if not self.calls:
                break
            await asyncio.sleep(0.05)
        for call in list(self.calls.values()):
            await call.close("shutdown")
        self.calls.clear()
        await self._unregister()
        if self._stats_task is not None:
            self._stats_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        await self.transport.close()

    async def _unregister(self) -> None:
        """Tell the registrar we are gone (Expires: 0), waiting a little for its answer."""
        if self._registering is not None:
            await self._registering.stop()

    # -- admin controller -------------------------------------------------------------------
    async def hangup(self, session_id: str) -> bool:
        for call in self.calls.values():
            if call.session_id == session_id:
                self._hangup(call, "admin-hangup")
                return True
        return False

    def ready(self) -> dict[str, object]:
        registered = self.registration is None or self.registration.state is RegState.REGISTERED
        ready = self.transport.ready and not self.draining and registered
        report: dict[str, object] = {
            "ready": ready,
            "sip": "up" if self.transport.ready else "down",
            "draining": self.draining,
            "model": self.settings.model,
            "active_calls": len(self.calls),
        }
        if self.registration is not None:
            report["registration"] = self.registration.state.value
        return report

    # -- SIP plumbing -----------------------------------------------------------------------
    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _on_message(self, data: bytes, source: Destination) -> None:
        now = self._now()
        # Before parsing, so a flood costs a dictionary lookup per datagram.
        verdict = self.policy.check_datagram(source.host, now)
        if verdict.action is Action.DROP:
            return
        if verdict.action is Action.REJECT:
            answer = refusal(
                data, source, verdict, to_tag=secrets.token_hex(6),
                server=self.settings.user_agent,
            )
            if answer is not None:
                self.transport.send(*answer)
            return
        # Everything logged while handling the message (and every task it starts) is
        # about its call.
        call_id = sniff_call_id(data)
        known = self.registry.by_call_id(call_id) if call_id is not None else None
        with call_context(call_id, known.session_id if known is not None else None):
            try:
                self.ua.receive(data, source, now)
            except Exception:  # never let one message take the transport loop down
                logger.exception("error handling SIP message from %s", source)
            self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        now = self._now()
        self.ua.handle_timer(now)
        self._pump()

    def _pump(self) -> None:
        """Send what the core produced, handle its events, re-arm its timer."""
        while True:
            for data, destination in self.ua.messages_to_send():
                self.transport.send(data, destination)
            event = self.ua.next_event()
            if event is None:
                break
            dialog: Dialog = event.dialog
            call = self.calls.get(dialog)
            with call_context(dialog.call_id, call.session_id if call is not None else None):
                try:
                    self._handle_event(event)
                except Exception:
                    logger.exception("error handling %s", type(event).__name__)
        deadline = self.ua.get_timer()
        if self._timer is not None and deadline != self._timer_when:
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._timer is None:
            # The one timer serves every call: not the one whose handling armed it.
            self._timer = asyncio.get_running_loop().call_at(
                deadline, self._on_timer, context=detached_context()
            )
            self._timer_when = deadline

    def _handle_event(self, event: object) -> None:
        if isinstance(event, IncomingCall):
            self._incoming(event)
        elif isinstance(event, CallConfirmed):
            self._confirmed(event)
        elif isinstance(event, OfferReceived):
            self._offer(event)
        elif isinstance(event, InfoReceived):
            call = self.calls.get(event.dialog)
            if call is not None and event.content_type == "application/dtmf-relay":
                digit = parse_dtmf_relay(event.body)
                if digit is not None:
                    call.receive_dtmf(digit)
        elif isinstance(event, CallEnded):
            call = self.calls.pop(event.dialog, None)
            pending = self._transfers.pop(event.dialog, None)
            if pending is not None:
                pending.settle(False)
            if call is not None:
                call.record.end_reason = call.record.end_reason or event.reason
                if self.settings.model == "openai":
                    from bridge.agents.facts import extract_facts

                    call.record.facts.update(extract_facts(call.record.transcript))
                self._spawn(call.close(event.reason))
        elif isinstance(event, TransferAccepted | TransferRejected | TransferProgress):
            self._transfer_event(event)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- calls --------------------------------------------------------------------------
    def _admit(
        self, request: Request, source: Destination, now: float
    ) -> tuple[int, tuple[tuple[str, str], ...]] | None:
        """The UA's admission check of a new INVITE: refusals are answered statelessly."""
        if self.draining:
            return 503, (("Retry-After", RETRY_AFTER),)
        verdict = self.policy.check_invite(
            source.host, dialled_users(request), now, len(self.calls), self.settings.max_calls,
        )
        if not verdict.allowed:
            return verdict.status or 403, verdict.headers
        return None

    def _incoming(self, event: IncomingCall) -> None:
        dialog, now = event.dialog, self._now()
        if not self._authenticated(event, now):
            return
        try:
            reservation = reserve_port_pair(self.settings.sip_host, self.ports)
        except (RuntimeError, OSError) as exc:
            logger.warning("no free RTP port (%s): refusing %s", exc, dialog.call_id)
            self.ua.reject(dialog, 503, now, headers=(("Retry-After", RETRY_AFTER),))
            return
        port = reservation.port
        request = event.request
        from_ = request.from_
        identity = request.headers.get("P-Asserted-Identity")
        record = CallRecord(
            session_id=uuid.uuid4().hex[:12],
            call_id=dialog.call_id,
            from_uri=str(from_.uri),
            to_uri=str(request.to.uri),
            caller_number=from_.uri.user,
            remote_addr=None,
            created_at=time.time(),
            model=self.settings.model,
        )
        bind_session(record.session_id)
        for name, value in request.headers:
            # Twilio's call facts (X-Twilio-CallSid, -AccountSid …) go into the call record.
            if name.lower().startswith("x-twilio-"):
                record.facts[name.lower()] = value
        if identity:
            # The network-asserted caller (RFC 3325) wins over the From header.
            try:
                asserted = NameAddress.parse(split_header_values(identity)[0]).uri
            except RemoteProtocolError:
                logger.debug("ignoring unparseable P-Asserted-Identity %r", identity)
            else:
                record.caller_number = asserted.user or asserted.opaque or record.caller_number
        try:
            call = Call(
                dialog=dialog,
                record=record,
                registry=self.registry,
                model_factory=self._model_factory(dialog, record),
                local_host=self.settings.sip_host,
                rtp_port=port,
                ports=self.ports,
                inactivity_timeout=self.settings.rtp_inactivity_timeout,
                hold_inactivity_timeout=self.settings.rtp_hold_inactivity_timeout,
                on_hangup=self._hangup,
                open_timeout=self.model_ready_timeout,
                max_reconnects=self.settings.model_max_reconnects,
                transfer_target=self.settings.fallback_transfer_target,
                on_transfer=self._transfer,
                reservation=reservation,
                recordings=self.recordings,
                ticks=self.ticks,
            )
        except Exception:
            reservation.release()
            logger.exception("cannot create model %s", self.settings.model)
            self.ua.reject(dialog, 503, now, headers=(("Retry-After", RETRY_AFTER),))
            return
        if event.offer is not None:
            try:
                offer = SessionDescription.parse(event.offer)
                negotiated = negotiate(
                    offer,
                    local_host=self.public_host,
                    local_port=port,
                    session_id=call.sdp_session_id,
                    srtp=self.srtp,
                    srtp_key=call.srtp_key,
                )
            except RemoteProtocolError as exc:
                reservation.release()
                warning = f'304 {self.public_host} "{exc.reason}"'
                self.ua.reject(dialog, exc.status, now, headers=(("Warning", warning),))
                return
            call.negotiated = negotiated
        self.calls[dialog] = call
        self.registry.add(record)
        self._spawn(self._setup(call, event.offer is None))

    def _authenticated(self, event: IncomingCall, now: float) -> bool:
        """Digest-check a new call from an untrusted source; refuse it (401/403) if needed."""
        verifier = self.verifier
        source = event.dialog.source.host
        if verifier is None or (self.trusted is not None and source in self.trusted):
            return True
        if verifier.failures(source, now) >= AUTH_FAILURES_BEFORE_403:
            # Brute force: stop challenging this source for a while.
            self.ua.reject(event.dialog, 403, now)
            return False
        result = verifier.verify_request(event.request, now, source=source)
        if result.accepted:
            return True
        self.ua.reject(event.dialog, result.status, now, headers=tuple(result.headers))
        return False

    def _model_factory(
        self, dialog: Dialog, record: CallRecord
    ) -> Callable[[ObservationHandler], ModelSession]:
        """How this call makes its model sessions (again after a re-bridge).

        The openai model gets the tools: the server's, or a multi-agent adapter of its own
        per call (the same one across re-bridges, so the current agent survives).
        """
        if self.settings.model != "openai":
            return lambda observer: create_model(self.settings.model, self.settings)
        from bridge.openai_realtime import create_openai_model

        tools = self.tools
        agents = self.agents
        adapter = None
        if tools is None and agents is not None:
            from bridge.agents import AgentCallContext, MultiAgentAdapter

            context = AgentCallContext.for_call(
                CallContext(
                    call_id=dialog.call_id,
                    session_id=record.session_id,
                    caller=record.caller_number or record.from_uri,
                    callee=record.to_uri,
                    codec="PCMU",
                ),
                caller_number=record.caller_number,
                dialled_number=SipUri.parse(record.to_uri).user,
            )

            async def refer(target: str) -> bool:
                call = self.calls.get(dialog)
                if call is None:
                    return False

                def failed(why: str) -> None:
                    # Accepted, then failed: the caller is still ours and may ask again.
                    context.transfer_requested = None
                    call.model.send_note(
                        f"The transfer to a human did not go through ({why}). Apologise "
                        "and keep helping the caller."
                    )

                return await self.refer(
                    call, target, reason="transferred-to-human", on_failed=failed
                )

            adapter = MultiAgentAdapter(
                agents, context, transfer=refer, transfer_target=self.settings.transfer_target
            )
            tools = adapter

        def make(observer: ObservationHandler) -> ModelSession:
            model = create_openai_model(self.settings, tools=tools, observer=observer)
            if adapter is not None:
                model.config = adapter.configure(model.config)
            return model

        return make

    async def _setup(self, call: Call, late_offer: bool) -> None:
        """Open the model while ringing, then answer (bounded wait).

        A model that is not ready in time does not refuse the call: the caller is answered
        and hears the fallback prompt (:meth:`Call.model_unavailable`).
        """
        dialog = call.dialog
        loop = asyncio.get_running_loop()
        ring = self.settings.ring_ms / 1000
        opening = loop.create_task(call.open_model())
        started = loop.time()
        failure: Exception | None = None
        try:
            done, _ = await asyncio.wait({opening}, timeout=RING_AFTER)
            if (ring > 0 or not done) and dialog.state is DialogState.EARLY:
                self.ua.ring(dialog, self._now())
                self._pump()
            await asyncio.wait_for(opening, self.model_ready_timeout)
            remaining = ring - (loop.time() - started)
            if remaining > 0:
                await asyncio.sleep(remaining)
        except Exception as exc:
            failure = exc
        if dialog.state is not DialogState.EARLY:
            return  # cancelled while ringing
        if late_offer:
            call.sdp_version += 1
            body = self._our_offer(call)
        else:
            assert call.negotiated is not None
            body = bytes(call.negotiated.answer)
            try:
                await call.start_media(call.negotiated)
            except OSError as exc:  # another process holds the allocated port pair
                call.log.warning("cannot bind RTP port %d: %s", call.rtp_port, exc)
                if dialog.state is DialogState.EARLY:
                    headers = (("Retry-After", RETRY_AFTER),)
                    self.ua.reject(dialog, 503, self._now(), headers=headers)
                    self._pump()
                return
        self.ua.answer(dialog, body, self._now())
        call.mark_answered()
        self._pump()
        if failure is not None:
            call.model_unavailable(*_unavailable_reason(failure))

    def _confirmed(self, event: CallConfirmed) -> None:
        call = self.calls.get(event.dialog)
        if call is None or call.pending_offer is None:
            return
        offer = SessionDescription.parse(call.pending_offer)
        call.pending_offer = None
        try:
            if event.answer is None:
                raise RemoteProtocolError("ACK without the SDP answer to our offer", 488)
            negotiated = accept_answer(offer, SessionDescription.parse(event.answer))
        except RemoteProtocolError as exc:
            call.log.warning("late-offer answer refused: %s", exc.reason)
            self._hangup(call, "bad-sdp-answer")
            return
        self._spawn(self._start_late_media(call, negotiated))

    async def _start_late_media(self, call: Call, negotiated: Negotiated) -> None:
        try:
            await call.start_media(negotiated)
        except OSError as exc:
            call.log.warning("cannot bind RTP port %d: %s", call.rtp_port, exc)
            self._hangup(call, "rtp-port-unavailable")

    def _our_offer(self, call: Call) -> bytes:
        """Our SDP offer (INVITE or re-INVITE without one); its answer comes in the ACK."""
        body = make_offer(
            local_host=self.public_host,
            local_port=call.rtp_port,
            session_id=call.sdp_session_id,
            srtp=self.srtp,
            srtp_key=call.srtp_key,
            version=call.sdp_version,
        ).serialize().encode()
        call.pending_offer = body
        return body

    def _offer(self, event: OfferReceived) -> None:
        call = self.calls.get(event.dialog)
        now = self._now()
        if call is None:
            self.ua.reject_offer(event.dialog, 481, now)
            return
        call.sdp_version += 1
        if event.offer is None:
            self.ua.answer_offer(event.dialog, self._our_offer(call), now)
            return
        # The RTP session keeps the codec chosen at set-up: a re-offer must include it.
        supported = (call.negotiated.codec,) if call.negotiated else (PCMU, PCMA)
        try:
            offer = SessionDescription.parse(event.offer)

            def answer() -> Negotiated:
                return negotiate(
                    offer,
                    local_host=self.public_host,
                    local_port=call.rtp_port,
                    session_id=call.sdp_session_id,
                    srtp=self.srtp,
                    srtp_key=call.srtp_key,
                    version=call.sdp_version,
                    supported=supported,
                )

            negotiated = answer()
            previous = call.negotiated.srtp if call.negotiated is not None else None
            if (
                negotiated.srtp is not None
                and previous is not None
                and negotiated.srtp.suite != previous.suite
            ):
                # Both AES_CM_128 suites derive the same session keys from a master key: a
                # new context under our old key would reuse its keystream. New suite, new key.
                call.srtp_key = secrets.token_bytes(len(call.srtp_key))
                negotiated = answer()
        except RemoteProtocolError as exc:
            call.sdp_version -= 1
            call.log.info("re-offer refused: %s", exc.reason)
            self.ua.reject_offer(event.dialog, exc.status, now)
            return
        self.ua.answer_offer(event.dialog, bytes(negotiated.answer), now)
        call.apply_negotiation(negotiated)

    # -- transfer (REFER) ----------------------------------------------------------------
    async def transfer(self, session_id: str, target: str) -> bool:
        """Blind-transfer a live call to ``target`` (admin, agents); True once accepted.

        Raises ValueError for a target that is not a sip:/sips:/tel: URI.
        """
        if not target.lower().startswith(("sip:", "sips:", "tel:")):
            raise ValueError("the transfer target must be a sip:, sips: or tel: URI")
        call = next((c for c in self.calls.values() if c.session_id == session_id), None)
        if call is None:
            return False
        return await self.refer(call, target, reason="transferred")

    async def refer(
        self,
        call: Call,
        target: str,
        *,
        reason: str,
        on_failed: Callable[[str], None] | None = None,
    ) -> bool:
        """Send REFER; resolves True when the peer accepts it (2xx), False otherwise.

        When the transfer then succeeds (final NOTIFY 2xx) we hang up with ``reason``; when
        it fails after being accepted, the caller stays with the agent.
        """
        dialog = call.dialog
        if dialog.state is not DialogState.CONFIRMED or dialog in self._transfers:
            return False
        pending = _PendingTransfer(target=target, reason=reason, on_failed=on_failed)
        self._transfers[dialog] = pending
        self.ua.refer(dialog, target, self._now())
        call.system_line("transfer-requested", f"REFER to {target}")
        self._pump()
        return await pending.accepted

    def _transfer_event(
        self, event: TransferAccepted | TransferRejected | TransferProgress
    ) -> None:
        call = self.calls.get(event.dialog)
        pending = self._transfers.get(event.dialog)
        if call is None or pending is None:
            return
        if isinstance(event, TransferAccepted):
            call.system_line("transfer-accepted", f"{pending.target} ({event.status})")
            pending.settle(True)
        elif isinstance(event, TransferRejected):
            del self._transfers[event.dialog]
            call.system_line(
                "transfer-rejected", f"{pending.target}: {event.status} {event.reason}"
            )
            pending.settle(False)
            if pending.hang_up_on_failure:
                self._hangup(call, pending.reason)
        elif event.final:
            del self._transfers[event.dialog]
            if 200 <= event.status < 300:
                call.system_line("transferred", pending.target)
                self._hangup(call, pending.reason)
            else:
                why = f"{pending.target}: the target answered {event.status}"
                call.system_line("transfer-failed", why)
                if pending.hang_up_on_failure:
                    self._hangup(call, pending.reason)
                elif pending.on_failed is not None:
                    pending.on_failed(why)

    def _transfer(self, call: Call, target: str, reason: str) -> None:
        """The call's own fallback (model lost): REFER to ``target``, else hang up."""
        if call.dialog.state is not DialogState.CONFIRMED or call.dialog in self._transfers:
            self._hangup(call, reason)
            return
        pending = _PendingTransfer(target=target, reason=reason, hang_up_on_failure=True)
        self._transfers[call.dialog] = pending
        self.ua.refer(call.dialog, target, self._now())
        call.system_line("transfer-requested", f"REFER to {target} ({reason})")
        self._pump()

    def _hangup(self, call: Call, reason: str) -> None:
        if call.dialog.state is DialogState.TERMINATED:
            return
        call.record.end_reason = reason
        with call_context(call.dialog.call_id, call.session_id):
            self.ua.hangup(call.dialog, self._now(), reason=reason)
            self._pump()

    async def _refresh_stats(self) -> None:
        """Copy every call's RTP counters into its record once a second, in slices.

        Hundreds of refreshes at once would hold the loop for milliseconds and make every
        call's next packets late; a tenth of the calls every 100 ms keeps each burst small.
        """
        slices = STATS_SLICES
        while True:
            calls = list(self.calls.values())
            size = -(-len(calls) // slices)  # ceil: every call once per round
            for index in range(slices):
                await asyncio.sleep(STATS_INTERVAL / slices)
                for call in calls[index * size : (index + 1) * size]:
                    if self.calls.get(call.dialog) is call:  # still live
                        call.refresh_stats()
