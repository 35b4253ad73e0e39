"""The SIP user agent core: a sans-I/O UAS (and in-dialog UAC) for many calls at once.

Feed it what arrives with :meth:`UserAgent.receive` (bytes, source, ``now``), take what
to send from :meth:`UserAgent.messages_to_send`, events (:mod:`sipagent.events`) from
:meth:`UserAgent.next_event`, and drive time with :meth:`get_timer` / :meth:`handle_timer`.
The transaction user (the call layer) answers events with :meth:`ring`, :meth:`answer`,
:meth:`reject`, :meth:`answer_offer`, :meth:`reject_offer` and :meth:`hangup`.

What the core answers on its own: retransmissions, OPTIONS, CANCEL (200 + 487), unknown
dialogs (481), unsupported methods (405/501), extensions (420), media types (415/406),
URI schemes (416), merged requests (482) and malformed requests (400/505).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import logging
import secrets
from collections import Counter, deque
from collections.abc import Callable

from .dialog import Dialog, DialogKey, DialogState
from .events import (
    CallConfirmed,
    CallEnded,
    IncomingCall,
    InfoReceived,
    OfferReceived,
    TransferAccepted,
    TransferProgress,
    TransferRejected,
    UaEvent,
)
from .exceptions import LocalProtocolError, MessageParseError, RemoteProtocolError
from .headers import NameAddress, Via, split_header_values
from .message import (
    FramedError,
    Headers,
    Request,
    Response,
    make_response,
    parse_message,
    validate_request,
)
from .transaction import (
    ClientNonInviteTransaction,
    Destination,
    Outbox,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    TxState,
)

__all__ = ["ALLOWED_METHODS", "Admission", "UserAgent"]

logger = logging.getLogger(__name__)

ALLOWED_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO", "NOTIFY")
#: Methods we know but do not serve: 405 with Allow, rather than 501.
_KNOWN_METHODS = frozenset(
    {"REGISTER", "MESSAGE", "SUBSCRIBE", "PUBLISH", "REFER", "PRACK"}
)
#: Option tags we implement (none yet: no 100rel, no session timers, no Replaces).
SUPPORTED: tuple[str, ...] = ()
_SDP = "application/sdp"

_ServerTxKey = tuple[str, str, int, str]
_ServerTx = ServerInviteTransaction | ServerNonInviteTransaction
_Timed = ServerInviteTransaction | ServerNonInviteTransaction | ClientNonInviteTransaction | Dialog
Admission = Callable[[Request, Destination, float], tuple[int, tuple[tuple[str, str], ...]] | None]
"""``(request, source, now)`` of a new INVITE → None to admit it, or (status, headers) to refuse."""


class UserAgent:
    """Sans-I/O SIP UAS core for all calls of one listening address."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        public_host: str,
        new_token: Callable[[], str],
        user_agent: str = "sipagent",
        tls_port: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tls_port = tls_port
        """Our TLS listener's port, for the Via and Contact of TLS dialogs (None: no TLS)."""
        self.public_host = public_host
        self.user_agent = user_agent
        self._token = new_token
        self._outbox: Outbox = []
        self._events: deque[UaEvent] = deque()
        self._server_txs: dict[_ServerTxKey, _ServerTx] = {}
        self._client_txs: dict[tuple[str, str], ClientNonInviteTransaction] = {}
        self._refers: dict[str, Dialog] = {}
        """Branch of each REFER we sent → its dialog, to report the outcome."""
        self._dialogs: dict[DialogKey, Dialog] = {}
        self._invite_txs: dict[DialogKey, ServerInviteTransaction] = {}
        self._offer_txs: dict[DialogKey, ServerInviteTransaction | ServerNonInviteTransaction] = {}
        self._merge: dict[tuple[str, str, int], _ServerTxKey] = {}
        self._merge_of: dict[_ServerTxKey, tuple[str, str, int]] = {}
        # Timers: a heap of (deadline, n, item) over every transaction and dialog, so that a
        # message or a timer costs O(log n) however many calls linger (transactions absorb
        # retransmissions for 32 s after they end). An entry counts only while ``_armed``
        # still holds its deadline for the item; items whose timers may have changed are
        # ``_watch``ed and re-read at the next get_timer/handle_timer.
        self._heap: list[tuple[float, int, _Timed]] = []
        self._armed: dict[int, float] = {}
        self._watched: list[_Timed] = []
        self._order = itertools.count()
        self._live_txs: Counter[str] = Counter()
        """Live transactions per Call-ID: a terminated dialog is kept while its call has one."""
        self._ended: list[Dialog] = []
        """Dialogs terminated since the last timer."""
        self._ended_waiting: dict[str, list[Dialog]] = {}
        """Terminated dialogs per Call-ID, forgotten when the call's last transaction ends."""
        #: Hangups asked for before the ACK of our 2xx: the BYE waits for it (§15).
        self._pending_bye: dict[DialogKey, str] = {}
        self.counters: Counter[str] = Counter()
        self.on_other_response: Callable[[Response, float], bool] | None = None
        """Offered responses no transaction of ours matches (a registration client's);
        returns True when it took the response."""
        self.admission: Admission | None = None
        """Asked about every new INVITE before any state is made for it: None admits it, a
        (status, headers) refusal is answered statelessly (:meth:`_refuse_stateless`)."""
        self._tag_key = secrets.token_bytes(16)  # for the To tags of stateless refusals

    # -- I/O boundary -----------------------------------------------------------------------
    def receive(self, data: bytes, source: Destination, now: float) -> None:
        """Handle one datagram (UDP) or one framed message (TCP/TLS) from ``source``."""
        try:
            message = parse_message(data, stream=source.reliable)
        except FramedError as exc:
            self.counters["rx_invalid"] += 1
            if isinstance(exc.message, Request) and exc.message.method != "ACK":
                self._respond_stateless(exc.message, source, exc.status, exc.reason)
            return
        except MessageParseError as exc:
            self.counters["rx_unparseable"] += 1
            logger.debug("dropped unparseable message from %s: %s", source, exc.reason)
            return
        if isinstance(message, Response):
            self._receive_response(message, now)
        else:
            self._receive_request(message, source, now)

    def messages_to_send(self) -> list[tuple[bytes, Destination]]:
        out = [(message.serialize(), dest) for message, dest in self._outbox]
        for message, _ in self._outbox:
            if isinstance(message, Response):
                self.counters[f"tx_{message.status}"] += 1
            else:
                self.counters[f"tx_{message.method}"] += 1
        self._outbox.clear()
        return out

    def next_event(self) -> UaEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        self._sync_timers()
        heap, armed = self._heap, self._armed
        while heap:
            when, _, item = heap[0]
            if armed.get(id(item)) == when:
                return when
            heapq.heappop(heap)  # superseded by a later entry of the same item, or disarmed
        return None

    def handle_timer(self, now: float) -> None:
        self._sync_timers()
        heap, armed = self._heap, self._armed
        due: list[_Timed] = []
        while heap and heap[0][0] <= now:
            when, _, item = heapq.heappop(heap)
            if armed.get(id(item)) == when:
                del armed[id(item)]
                due.append(item)
        for item in due:
            self._watch(item)
            if isinstance(item, Dialog):
                self._dialog_timer(item, now)
            else:
                item.handle_timer(now)
                if item.terminated:
                    self._forget_tx(item)
        self._forget_terminated()

    def _dialog_timer(self, dialog: Dialog, now: float) -> None:
        result = dialog.ok_timer(now)
        if result is True:
            # No ACK within 64*T1: confirm and tear down with BYE (§13.3.1.4).
            logger.warning("no ACK for 2xx on %s: hanging up", dialog.call_id)
            reason = self._pending_bye.pop(dialog.key, "ack-timeout")
            if dialog.state is DialogState.ANSWERED:
                dialog.set_state(DialogState.CONFIRMED)
            self._send_bye(dialog, reason, now)
        elif isinstance(result, tuple):
            self._outbox.append(result)

    def _watch(self, item: _Timed) -> None:
        """``item``'s timers may have changed: re-read them before the next timer decision."""
        self._watched.append(item)

    def _sync_timers(self) -> None:
        armed = self._armed
        for item in self._watched:
            when = item.get_timer()
            if when is None:
                armed.pop(id(item), None)
            elif armed.get(id(item)) != when:
                armed[id(item)] = when
                # The entry holds the item, so its id() is not reused while the entry lives.
                heapq.heappush(self._heap, (when, next(self._order), item))
        self._watched.clear()

    def _add_server_tx(self, key: _ServerTxKey, tx: _ServerTx) -> None:
        replaced = self._server_txs.get(key)
        self._server_txs[key] = tx
        if replaced is not None:
            self._release_call(replaced.request.call_id)
        self._live_txs[tx.request.call_id] += 1
        self._watch(tx)

    def _add_client_tx(self, key: tuple[str, str], tx: ClientNonInviteTransaction) -> None:
        replaced = self._client_txs.get(key)
        self._client_txs[key] = tx
        if replaced is not None:
            self._release_call(replaced.request.call_id)
        self._live_txs[tx.request.call_id] += 1
        self._watch(tx)

    def _release_call(self, call_id: str) -> None:
        """One transaction of ``call_id`` fewer; its ended dialogs go with the last one."""
        self._live_txs[call_id] -= 1
        if self._live_txs[call_id] <= 0:
            del self._live_txs[call_id]
            for dialog in self._ended_waiting.pop(call_id, ()):
                self._drop_dialog(dialog)

    def _forget_tx(self, tx: _ServerTx | ClientNonInviteTransaction) -> None:
        """A terminated transaction leaves the tables (and may let its call's dialog go)."""
        call_id = tx.request.call_id
        if isinstance(tx, ClientNonInviteTransaction):
            branch = tx.request.top_via.branch or ""
            key2 = (branch, tx.request.method)
            if self._client_txs.get(key2) is not tx:
                return
            del self._client_txs[key2]
            dialog_of_refer = self._refers.pop(branch, None)
            if tx.timed_out and dialog_of_refer is not None:
                self._events.append(TransferRejected(
                    dialog=dialog_of_refer, status=408, reason="Request Timeout"
                ))
        else:
            key = self._server_tx_key(tx.request, tx.request.top_via)
            if self._server_txs.get(key) is not tx:
                return
            del self._server_txs[key]
            merge_key = self._merge_of.pop(key, None)
            if merge_key is not None and self._merge.get(merge_key) == key:
                del self._merge[merge_key]
            if tx.timed_out:
                logger.info("no ACK for %s final response", call_id)
        self._release_call(call_id)

    @property
    def dialogs(self) -> list[Dialog]:
        return list(self._dialogs.values())

    # -- transaction user API -----------------------------------------------------------
    def ring(self, dialog: Dialog, now: float) -> None:
        """Send 180 Ringing for an incoming call."""
        tx = self._invite_tx(dialog)
        tx.respond(self._dialog_response(tx.request, dialog, 180), now)

    def answer(self, dialog: Dialog, sdp: bytes, now: float) -> None:
        """Send 200 OK with our SDP (answer, or offer when the INVITE had none)."""
        tx = self._invite_tx(dialog)
        ok = self._dialog_response(tx.request, dialog, 200, body=sdp)
        tx.respond(ok, now)
        dialog.set_state(DialogState.ANSWERED)
        dialog.start_ok_retransmission(ok, tx.destination, now)
        self._watch(dialog)
        self._invite_txs.pop(dialog.key, None)

    def reject(
        self,
        dialog: Dialog,
        status: int,
        now: float,
        reason: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Refuse an incoming call with a final non-2xx response."""
        if status < 300:
            raise LocalProtocolError("reject needs a status >= 300")
        tx = self._invite_tx(dialog)
        tx.respond(self._response(tx.request, status, reason, dialog.key.local_tag, headers), now)
        self._invite_txs.pop(dialog.key, None)
        self._end(dialog, "rejected", now)

    def answer_offer(self, dialog: Dialog, sdp: bytes, now: float) -> None:
        """Answer a pending re-INVITE/UPDATE with 200 and our SDP."""
        tx = self._offer_txs.pop(dialog.key, None)
        if tx is None:
            raise LocalProtocolError("no offer pending on this dialog")
        ok = self._dialog_response(tx.request, dialog, 200, body=sdp)
        tx.respond(ok, now)
        self._watch(tx)
        if isinstance(tx, ServerInviteTransaction):
            dialog.start_ok_retransmission(ok, tx.destination, now)
            self._watch(dialog)

    def reject_offer(self, dialog: Dialog, status: int, now: float) -> None:
        """Refuse a pending re-INVITE/UPDATE (the session stays as it was)."""
        tx = self._offer_txs.pop(dialog.key, None)
        if tx is None:
            raise LocalProtocolError("no offer pending on this dialog")
        tx.respond(self._response(tx.request, status, None, dialog.key.local_tag), now)
        self._watch(tx)

    def hangup(self, dialog: Dialog, now: float, reason: str = "local-bye") -> None:
        """End a call from our side: BYE when confirmed, else 480 (before the answer).

        Answered but not yet ACKed: the BYE waits for the ACK (or its timeout), as §15
        forbids it earlier; CallEnded comes with the BYE.
        """
        if dialog.state is DialogState.TERMINATED:
            return
        if dialog.state is DialogState.EARLY:
            self.reject(dialog, 480, now)
            return
        if dialog.state is DialogState.ANSWERED:
            self._pending_bye.setdefault(dialog.key, reason)
            return
        self._send_bye(dialog, reason, now)

    # -- requests ---------------------------------------------------------------------------
    def _receive_request(self, request: Request, source: Destination, now: float) -> None:
        method = request.method
        known = method in ALLOWED_METHODS or method in _KNOWN_METHODS
        self.counters[f"rx_{method if known else 'other'}"] += 1  # bounded label set
        try:
            validate_request(request)  # first: a bad version (505) spoils the Via too
            top = request.top_via
        except RemoteProtocolError as exc:
            self.counters["rx_invalid"] += 1
            if method != "ACK":
                status, headers = exc.status, exc.headers
                if status == 400 and not known:
                    # §8.2.1: the method is inspected before the headers (RFC 4475 §3.1.2.18).
                    status, headers = 501, ()
                self._respond_stateless(request, source, status, exc.reason, headers)
            return
        destination = self._response_destination(request, top, source)
        key = self._server_tx_key(request, top)
        existing = self._server_txs.get(key)
        if existing is not None:
            self._watch(existing)
            if request.method == "ACK" and existing.state is TxState.ACCEPTED:
                # The ACK of a 2xx only shares the INVITE's key with RFC 2543 peers.
                self._receive_ack(request, now)
            else:
                existing.receive_request(request, now)
            return
        if request.method == "ACK":
            self._receive_ack(request, now)
            return
        if request.method == "CANCEL":
            self._receive_cancel(request, destination, now)
            return
        unsupported = self._unsupported_extensions(request)
        if unsupported:
            self._respond_new(request, destination, 420, now,
                              headers=(("Unsupported", ", ".join(unsupported)),))
            return
        to_tag = request.to.tag
        if to_tag is not None:
            self._receive_in_dialog(request, destination, source, to_tag, now)
        elif request.method == "INVITE":
            self._receive_invite(request, destination, source, now)
        elif request.method == "OPTIONS":
            self._respond_new(request, destination, 200, now, headers=self._capabilities())
        elif request.method in ("BYE", "INFO", "UPDATE"):
            self._respond_new(request, destination, 481, now)
        else:
            self._respond_unsupported(request, destination, now)

    def _receive_invite(
        self, request: Request, destination: Destination, source: Destination, now: float
    ) -> None:
        merge_key = (request.call_id, request.from_.tag or "", request.cseq.seq)
        if merge_key in self._merge and self._merge[merge_key] in self._server_txs:
            self._respond_new(request, destination, 482, now)  # merged request (§8.2.2.2)
            return
        if self.admission is not None:
            refused = self.admission(request, source, now)
            if refused is not None:
                self._refuse_stateless(request, destination, *refused)
                return
        problem = self._check_body(request)
        if problem is not None:
            self._respond_new(request, destination, problem[0], now, headers=problem[1])
            return
        try:
            dialog = Dialog(
                request,
                local_tag=request.to.tag or self._token(),
                transport=source.transport,
                source=source,
                contact=self._contact(
                    source.transport, secure=source.transport == "tls" and _wants_sips(request)
                ),
            )
        except RemoteProtocolError as exc:
            self._respond_new(request, destination, exc.status, now, reason=exc.reason)
            return
        tx = ServerInviteTransaction(request, destination, self._outbox)
        key = self._server_tx_key(request, request.top_via)
        self._add_server_tx(key, tx)
        self._merge[merge_key] = key
        self._merge_of[key] = merge_key
        self._dialogs[dialog.key] = dialog
        self._watch(dialog)
        self._invite_txs[dialog.key] = tx
        tx.respond(self._response(request, 100, None, None), now)
        offer = request.body if request.body else None
        self._events.append(IncomingCall(dialog=dialog, request=request, offer=offer))

    def _receive_in_dialog(
        self,
        request: Request,
        destination: Destination,
        source: Destination,
        to_tag: str,
        now: float,
    ) -> None:
        key = DialogKey(request.call_id, to_tag, request.from_.tag or "")
        dialog = self._dialogs.get(key)
        if dialog is None and request.method == "INVITE":
            # §12.2.2 lets a UAS recreate a dialog it does not know (say, after a restart):
            # a new call keeping the peer's To tag (RFC 4475 §3.1.1.1).
            self._receive_invite(request, destination, source, now)
            return
        if dialog is None or dialog.state is DialogState.TERMINATED:
            self._respond_new(request, destination, 481, now)
            return
        self._watch(dialog)
        try:
            dialog.check_remote_seq(request)
        except RemoteProtocolError as exc:
            self._respond_new(request, destination, exc.status, now, reason=exc.reason)
            return
        method = request.method
        if method == "BYE":
            self._respond_new(request, destination, 200, now)
            self._end(dialog, "remote-bye", now)
        elif method in ("INVITE", "UPDATE"):
            self._receive_offer(dialog, request, destination, now)
        elif method == "INFO":
            self._respond_new(request, destination, 200, now)
            self._events.append(
                InfoReceived(dialog=dialog, content_type=request.content_type, body=request.body)
            )
        elif method == "OPTIONS":
            self._respond_new(request, destination, 200, now, headers=self._capabilities())
        elif method == "NOTIFY" and _event_package(request) == "refer":
            self._respond_new(request, destination, 200, now)
            state = (request.headers.get("Subscription-State") or "").split(";")[0]
            self._events.append(TransferProgress(
                dialog=dialog,
                status=_sipfrag_status(request.body),
                final=state.strip().lower() == "terminated",
            ))
        elif method == "NOTIFY":
            self._respond_new(request, destination, 489, now)  # Bad Event (RFC 6665)
        else:
            self._respond_unsupported(request, destination, now)

    def _receive_offer(
        self, dialog: Dialog, request: Request, destination: Destination, now: float
    ) -> None:
        # The peer sends this after its ACK, so if we are still ANSWERED that ACK was lost:
        # confirm now (and if our hangup was waiting for it, the dialog is gone).
        if dialog.state is DialogState.ANSWERED and not self._confirm(dialog, None, now):
            self._respond_new(request, destination, 481, now)
            return
        if dialog.key in self._offer_txs or dialog.key in self._invite_txs:
            self._respond_new(request, destination, 491, now)  # glare (§14.2)
            return
        problem = self._check_body(request)
        if problem is not None:
            self._respond_new(request, destination, problem[0], now, headers=problem[1])
            return
        tx: ServerInviteTransaction | ServerNonInviteTransaction
        if request.method == "INVITE":
            tx = ServerInviteTransaction(request, destination, self._outbox)
            tx.respond(self._response(request, 100, None, None), now)
        else:
            tx = ServerNonInviteTransaction(request, destination, self._outbox)
        self._add_server_tx(self._server_tx_key(request, request.top_via), tx)
        self._offer_txs[dialog.key] = tx
        self._events.append(
            OfferReceived(dialog=dialog, method=request.method, offer=request.body or None)
        )

    def _receive_ack(self, request: Request, now: float) -> None:
        to_tag = request.to.tag
        if to_tag is None:
            return
        dialog = self._dialogs.get(DialogKey(request.call_id, to_tag, request.from_.tag or ""))
        if dialog is None:
            self.counters["rx_stray_ack"] += 1
            return
        self._watch(dialog)
        if dialog.state is DialogState.ANSWERED:
            self._confirm(dialog, request.body or None, now)
        elif dialog.state is DialogState.CONFIRMED:
            pending = dialog.last_ok()
            if (
                pending is not None
                and dialog.get_timer() is not None
                and pending[0].cseq.seq == request.cseq.seq
            ):
                # ACK of a re-INVITE's 2xx; it carries the answer if we offered in the 2xx.
                dialog.stop_ok_retransmission()
                self._events.append(CallConfirmed(dialog=dialog, answer=request.body or None))

    def _confirm(self, dialog: Dialog, answer: bytes | None, now: float) -> bool:
        """ANSWERED -> CONFIRMED; False when a hangup was waiting and the BYE is now sent."""
        dialog.set_state(DialogState.CONFIRMED)
        reason = self._pending_bye.pop(dialog.key, None)
        if reason is not None:
            self._send_bye(dialog, reason, now)
            return False
        self._events.append(CallConfirmed(dialog=dialog, answer=answer))
        return True

    def _receive_cancel(self, request: Request, destination: Destination, now: float) -> None:
        key = self._server_tx_key(request, request.top_via, method="INVITE")
        invite_tx = self._server_txs.get(key)
        if invite_tx is None:
            self._respond_new(request, destination, 481, now)
            return
        self._watch(invite_tx)
        # Still unanswered: its dialog gets the 487 (from _end), with the same To tag.
        dialog = next(
            (self._dialogs[k] for k, tx in self._invite_txs.items() if tx is invite_tx), None
        )
        to_tag = dialog.key.local_tag if dialog is not None else None
        self._respond_new(request, destination, 200, now, to_tag=to_tag)
        if dialog is not None:
            self._end(dialog, "cancelled", now)

    # -- responses --------------------------------------------------------------------------
    def _receive_response(self, response: Response, now: float) -> None:
        self.counters[f"rx_{response.status}"] += 1
        try:
            branch = response.top_via.branch or ""
            method = response.cseq.method
        except RemoteProtocolError:
            self.counters["rx_invalid"] += 1
            return
        tx = self._client_txs.get((branch, method))
        if tx is None:
            if self.on_other_response is not None and self.on_other_response(response, now):
                return
            self.counters["rx_stray_response"] += 1
            return
        self._watch(tx)
        delivered = tx.receive_response(response, now)
        dialog = self._refers.get(branch)
        if delivered is None or dialog is None or delivered.status < 200:
            return
        del self._refers[branch]
        if delivered.status < 300:
            self._events.append(TransferAccepted(dialog=dialog, status=delivered.status))
        else:
            self._events.append(TransferRejected(
                dialog=dialog, status=delivered.status, reason=delivered.reason
            ))

    def refer(self, dialog: Dialog, target: str, now: float) -> None:
        """Blind transfer (RFC 3515): ask the peer to call ``target`` (a sip:/tel: URI).

        The outcome arrives as TransferAccepted/TransferRejected, then TransferProgress
        events from the peer's NOTIFYs; the dialog stays up until one side sends BYE.
        """
        if dialog.state is not DialogState.CONFIRMED:
            raise LocalProtocolError("REFER needs a confirmed dialog")
        branch = "z9hG4bK" + self._token()
        via = (f"SIP/2.0/{dialog.transport.upper()} {self._sent_by(dialog.transport)}"
               f";branch={branch};rport")
        request, destination = dialog.create_request("REFER", via)
        request.headers.add("Refer-To", f"<{target}>")
        request.headers.add("Referred-By", dialog.local_address.split(";tag=")[0])
        request.headers.add("User-Agent", self.user_agent)
        self._add_client_tx(
            (branch, "REFER"), ClientNonInviteTransaction(request, destination, self._outbox, now)
        )
        self._refers[branch] = dialog

    # -- helpers ----------------------------------------------------------------------------
    def _send_bye(self, dialog: Dialog, reason: str, now: float) -> None:
        branch = "z9hG4bK" + self._token()
        via = (f"SIP/2.0/{dialog.transport.upper()} {self._sent_by(dialog.transport)}"
               f";branch={branch};rport")
        request, destination = dialog.create_request("BYE", via)
        request.headers.add("User-Agent", self.user_agent)
        tx = ClientNonInviteTransaction(request, destination, self._outbox, now)
        self._add_client_tx((branch, "BYE"), tx)
        self._end(dialog, reason, now)

    def _end(self, dialog: Dialog, reason: str, now: float) -> None:
        if dialog.state is DialogState.TERMINATED:
            return
        dialog.end_reason = reason
        dialog.set_state(DialogState.TERMINATED)
        self._watch(dialog)
        self._ended.append(dialog)
        self._pending_bye.pop(dialog.key, None)
        # Requests still pending in the dialog get 487 (§15.1.2), so their transactions end.
        for pending in (self._invite_txs, self._offer_txs):
            tx = pending.pop(dialog.key, None)
            if tx is not None and tx.state in (TxState.TRYING, TxState.PROCEEDING):
                tx.respond(self._response(tx.request, 487, None, dialog.key.local_tag), now)
                self._watch(tx)
        self._events.append(CallEnded(dialog=dialog, reason=reason))

    def _forget_terminated(self) -> None:
        # Kept while any transaction of the call lives: a request crossing our BYE then
        # gets 481 instead of recreating the dialog.
        for dialog in self._ended:
            if self._live_txs.get(dialog.call_id):
                self._ended_waiting.setdefault(dialog.call_id, []).append(dialog)
            else:
                self._drop_dialog(dialog)
        self._ended.clear()

    def _drop_dialog(self, dialog: Dialog) -> None:
        if self._dialogs.get(dialog.key) is dialog:
            del self._dialogs[dialog.key]

    def _invite_tx(self, dialog: Dialog) -> ServerInviteTransaction:
        tx = self._invite_txs.get(dialog.key)
        if tx is None:
            raise LocalProtocolError("this call has already been answered or ended")
        self._watch(tx)
        return tx

    @staticmethod
    def _server_tx_key(request: Request, top: Via, method: str | None = None) -> _ServerTxKey:
        method = method or ("INVITE" if request.method == "ACK" else request.method)
        branch = top.branch or ""
        if not branch.startswith("z9hG4bK"):
            # RFC 2543 peer: fall back to the request's identity (§17.2.3).
            branch = f"2543:{request.call_id}:{request.cseq.seq}:{request.from_.tag}"
        return (branch, top.host.lower(), top.port or 5060, method)

    @staticmethod
    def _response_destination(request: Request, top: Via, source: Destination) -> Destination:
        """Where responses go (§18.2.2, RFC 3581), recording received/rport in the Via."""
        if source.reliable:
            return source
        changed = False
        if top.host != source.host:
            top.params["received"] = source.host
            changed = True
        if "rport" in top.params:
            top.params["rport"] = str(source.port)
            top.params["received"] = source.host
            changed = True
            port = source.port
        else:
            port = top.port or 5060
        if changed:
            lines = request.headers.lines("Via")
            first = split_header_values(lines[0])
            first[0] = str(top)
            rewritten = Headers()
            replaced = False
            for name, value in request.headers:
                if name == "Via" and not replaced:
                    rewritten.add(name, ", ".join(first))
                    replaced = True
                else:
                    rewritten.add(name, value)
            request.headers = rewritten
        return Destination("udp", source.host, port)

    def _respond_stateless(
        self,
        request: Request,
        source: Destination,
        status: int,
        reason: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        try:
            destination = self._response_destination(request, request.top_via, source)
        except RemoteProtocolError:
            if "Via" not in request.headers:
                return  # a response without Via reaches no one
            destination = source  # unreadable Via (say SIP/7.0/UDP): answer where it came from
        reason_text = f"Bad Request ({reason})" if status == 400 else None
        response = self._response(request, status, reason_text, None, headers)
        if status == 400:
            text = reason.replace("\\", "\\\\").replace('"', '\\"')
            response.headers.add("Warning", f'399 {self.public_host} "{text}"')
        self._outbox.append((response, destination))

    def _refuse_stateless(
        self,
        request: Request,
        destination: Destination,
        status: int,
        headers: tuple[tuple[str, str], ...],
    ) -> None:
        """A final refusal of a new INVITE that leaves no state behind (§8.2.7).

        Shedding load must not build it up: a transaction would retransmit the refusal for
        32 s when the ACK never comes (a flood never ACKs) and keep a timer per INVITE. Here a
        lost refusal is repaired by the caller's own INVITE retransmission, which meets the
        same refusal with the same To tag (derived from the request, so it also matches any
        ACK), and the ACK is absorbed as one for no dialog.
        """
        identity = "\0".join(
            (request.call_id, request.from_.tag or "", request.top_via.branch or "")
        ).encode()
        tag = hmac.new(self._tag_key, identity, hashlib.blake2s).hexdigest()[:16]
        self.counters["stateless_refusals"] += 1
        self._outbox.append((self._response(request, status, None, tag, headers), destination))

    def _respond_new(
        self,
        request: Request,
        destination: Destination,
        status: int,
        now: float,
        *,
        reason: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        to_tag: str | None = None,
    ) -> None:
        """Answer a request through a new server transaction (absorbs retransmissions)."""
        if request.method == "INVITE":
            tx: ServerInviteTransaction | ServerNonInviteTransaction = ServerInviteTransaction(
                request, destination, self._outbox
            )
        else:
            tx = ServerNonInviteTransaction(request, destination, self._outbox)
        self._add_server_tx(self._server_tx_key(request, request.top_via), tx)
        if request.to.tag:
            to_tag = None
        elif to_tag is None:
            to_tag = self._token()
        tx.respond(self._response(request, status, reason, to_tag, headers), now)

    def _respond_unsupported(self, request: Request, destination: Destination, now: float) -> None:
        if request.method in _KNOWN_METHODS:
            self._respond_new(request, destination, 405, now,
                              headers=(("Allow", ", ".join(ALLOWED_METHODS)),))
        else:
            self._respond_new(request, destination, 501, now,
                              headers=(("Allow", ", ".join(ALLOWED_METHODS)),))

    def _response(
        self,
        request: Request,
        status: int,
        reason: str | None,
        to_tag: str | None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Response:
        response = make_response(request, status, reason, to_tag=to_tag, headers=headers)
        response.headers.add("Server", self.user_agent)
        if status in (405, 501) and "Allow" not in response.headers:
            response.headers.add("Allow", ", ".join(ALLOWED_METHODS))
        return response

    def _dialog_response(
        self, request: Request, dialog: Dialog, status: int, body: bytes = b""
    ) -> Response:
        headers: list[tuple[str, str]] = [
            ("Record-Route", value) for value in request.headers.lines("Record-Route")
        ]
        headers.append(("Contact", dialog.contact))
        headers.extend(self._capabilities()[:2])
        response = make_response(
            request,
            status,
            to_tag=dialog.key.local_tag,
            headers=headers,
            body=body,
            content_type=_SDP if body else None,
        )
        response.headers.add("Server", self.user_agent)
        return response

    def _capabilities(self) -> tuple[tuple[str, str], ...]:
        return (
            ("Allow", ", ".join(ALLOWED_METHODS)),
            ("Supported", ", ".join(SUPPORTED)),
            ("Accept", _SDP),
        )

    @staticmethod
    def _unsupported_extensions(request: Request) -> list[str]:
        # Never asked of ACK or CANCEL: they are dispatched before.
        return [
            value for value in request.headers.get_all("Require") if value.lower() not in SUPPORTED
        ]

    @staticmethod
    def _check_body(request: Request) -> tuple[int, tuple[tuple[str, str], ...]] | None:
        """Status and headers to refuse an offer-carrying request's body with, if any."""
        accept = request.headers.get_all("Accept")
        if accept and not any(v.split(";")[0].strip().lower() in (_SDP, "application/*", "*/*")
                              for v in accept):
            return 406, (("Accept", _SDP),)
        if request.body and request.content_type != _SDP:
            return 415, (("Accept", _SDP),)
        encoding = request.headers.get("Content-Encoding")
        if request.body and encoding and encoding.strip().lower() != "identity":
            return 415, (("Accept-Encoding", "identity"),)
        return None

    def _sent_by(self, transport: str = "udp") -> str:
        host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host
        port = self.tls_port if transport == "tls" and self.tls_port else self.port
        return f"{host}:{port}"

    def _contact(self, transport: str, *, secure: bool = False) -> str:
        """Our Contact for a dialog over ``transport``: a sips: URI if it must be secure."""
        if secure:
            return f"<sips:sipagent@{self._sent_by(transport)}>"
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:sipagent@{self._sent_by(transport)}{suffix}>"


def _wants_sips(request: Request) -> bool:
    """Whether our Contact in the answer must be a SIPS URI (RFC 3261 §12.1.1): a sips:
    Request-URI, or top Record-Route, or else Contact."""
    if request.uri.lower().startswith("sips:"):
        return True
    routes = request.headers.get_all("Record-Route") or request.headers.get_all("Contact")[:1]
    return bool(routes) and NameAddress.parse(routes[0]).uri.scheme == "sips"


def _event_package(request: Request) -> str:
    """The package of an Event header, without parameters (``refer;id=3`` → ``refer``)."""
    return (request.headers.get("Event") or "").split(";")[0].strip().lower()


def _sipfrag_status(body: bytes) -> int:
    """Status code of a message/sipfrag body (``SIP/2.0 180 Ringing``), 0 if unreadable."""
    first = body.split(b"\n", 1)[0].split()
    if len(first) >= 2 and first[0].upper().startswith(b"SIP/") and first[1].isdigit():
        return int(first[1])
    return 0
