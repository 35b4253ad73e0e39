"""Banco Sinal phone banking (the Signal SP seed): balances, transfers between its accounts, Pix.

Who may do what: the caller's number (``ctx.caller_number``) must be the one registered for
the account; an account that is not the caller's is reported exactly like one that does not
exist, so the tools cannot be used to probe account numbers. Moving money also needs the
account's 4-digit PIN, typed on the keypad and ended with ``#``: the tool reads it with
``ctx.take_digits("#")`` and checks it against the stored salted hash; once right, the account
stays verified for the rest of the call (``ctx.verified["pin"]``), and three wrong PINs lock
transfers for the call.

Money is :class:`~decimal.Decimal` in the tools and integer centavos in SQLite; answers give
amounts the Brazilian way (``R$ 1.234,56``, :func:`format_brl`). Each account has a limit per
transfer and a daily limit over all its transfers of the day (São Paulo time).

Retries: the model sends an ``idempotency_key`` with each transfer and the same key when it
retries one. A key is kept per call (the model invents it, so keys of different calls may
clash); the first successful transfer under a key stores its result, and any later call with
that key returns that result without moving money again. The check, both balance updates and
the record are one SQLite transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
from dataclasses import dataclass
from datetime import timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Final, Literal

from pydantic import Field

from bridge.agents.context import AgentCallContext

from .store import ToolResult, call_log, error, get_store, normalize_number, verify_pin

__all__ = [
    "BANK_NAME",
    "BRT",
    "format_brl",
    "get_account_balance",
    "normalize_pix_key",
    "parse_amount",
    "pix_transfer",
    "transfer_money",
]

logger = logging.getLogger(__name__)

BANK_NAME: Final = "Banco Sinal"
BRT: Final = timezone(timedelta(hours=-3), "BRT")
"""São Paulo time (Brazil has had no daylight saving time since 2019): the limits' day."""
COUNTRY_CODE: Final = "55"
PIN_LENGTH: Final = 4
MAX_PIN_FAILURES: Final = 3
MAX_AMOUNT: Final = Decimal("1000000000")
PIN_PROMPT: Final = f"Please enter your {PIN_LENGTH}-digit PIN followed by #."

_VERIFIED_ACCOUNTS: Final = "banking.pin_verified_accounts"
_PIN_FAILURES: Final = "banking.pin_failures"
_CENT: Final = Decimal("0.01")

Account = Annotated[
    str, Field(description="The caller's Banco Sinal account number, e.g. 48213-7.")
]
Amount = Annotated[
    Decimal,
    Field(description="Amount in reais with at most 2 decimals, e.g. 150.00 for R$ 150,00."),
]
IdempotencyKey = Annotated[
    str,
    Field(
        description="A new short unique string for each transfer the caller asks for; send the"
        " same one again when retrying that same transfer."
    ),
]


# -- values ---------------------------------------------------------------------------------
def format_brl(amount: Decimal) -> str:
    """``amount`` as Brazilians write it: ``R$ 1.234,56`` (``-R$ 5,00`` when negative)."""
    rounded = amount.quantize(_CENT)
    units, cents = f"{abs(rounded):.2f}".split(".")
    sign = "-" if rounded < 0 else ""
    grouped = f"{int(units):,}".replace(",", ".")
    return f"{sign}R$ {grouped},{cents}"


def parse_amount(value: object) -> Decimal | None:
    """A positive amount with at most two decimals, or None.

    Takes numbers and text: ``150``, ``150.5``, ``"1234.56"``, ``"R$ 1.234,56"``.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        amount = Decimal(str(value))
    elif isinstance(value, str):
        text = value.strip().removeprefix("R$").replace(" ", "")
        if "," in text:
            text = text.replace(".", "").replace(",", ".")
        if not re.fullmatch(r"\d+(?:\.\d{1,2})?", text):
            return None
        amount = Decimal(text)
    else:
        return None
    try:
        if not amount.is_finite() or not 0 < amount < MAX_AMOUNT or amount % _CENT != 0:
            return None
    except InvalidOperation:
        return None
    return amount.quantize(_CENT)


def _cents(amount: Decimal) -> int:
    return int(amount * 100)


def _reais(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(_CENT)


def _account_number(value: str) -> str | None:
    digits = re.sub(r"[\s.\-]", "", value)
    return digits if re.fullmatch(r"\d{6}", digits) else None


def _show_account(number: str) -> str:
    return f"{number[:-1]}-{number[-1]}"


def _cpf_valid(digits: str) -> bool:
    if len(set(digits)) == 1:
        return False
    for length in (9, 10):
        total = sum(int(digits[i]) * (length + 1 - i) for i in range(length))
        if total * 10 % 11 % 10 != int(digits[length]):
            return False
    return True


def _cnpj_valid(digits: str) -> bool:
    if len(set(digits)) == 1:
        return False
    weights = [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]
    for length in (12, 13):
        total = sum(int(d) * w for d, w in zip(digits[:length], weights[-length:], strict=True))
        remainder = total % 11
        if (0 if remainder < 2 else 11 - remainder) != int(digits[length]):
            return False
        weights = [6, *weights]
    return True


PixKeyType = Literal["cpf", "cnpj", "phone", "email", "random"]


def normalize_pix_key(raw: str) -> tuple[str, PixKeyType] | None:
    """The Pix key as the directory stores it and its type, or None when it cannot be one.

    CPF/CNPJ: digits only (check digits verified); phone: ``+55`` and 10-11 digits (an
    11-digit number that is no valid CPF is taken as a mobile number); e-mail: lower case;
    random key: a lower-case UUID.
    """
    text = raw.strip()
    if re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", text):
        return text.lower(), "email"
    if re.fullmatch(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", text):
        return text.lower(), "random"
    compact = re.sub(r"[\s.\-/()]", "", text)
    if compact.startswith("+"):
        if re.fullmatch(r"\+55\d{10,11}", compact):
            return compact, "phone"
        return None
    if not compact.isdigit():
        return None
    if len(compact) == 11 and _cpf_valid(compact):
        return compact, "cpf"
    if len(compact) == 14 and _cnpj_valid(compact):
        return compact, "cnpj"
    if len(compact) == 11 and compact[2] == "9":
        return "+55" + compact, "phone"
    if len(compact) == 13 and compact.startswith("55"):
        return "+" + compact, "phone"
    return None


# -- authorization ----------------------------------------------------------------------------
def _caller_phone(ctx: AgentCallContext) -> str:
    return normalize_number(ctx.caller_number, COUNTRY_CODE)


_NOT_AUTHORIZED: Final = (
    "That account is not registered to the number you are calling from. Account services"
    " only work from the phone number registered with the bank."
)


def _caller_unidentified() -> ToolResult:
    return error(
        "caller_unidentified",
        "The caller's number is withheld or unknown, so no account can be accessed. Ask the"
        " caller to call again from the number registered with the bank.",
    )


def _owned_account(connection: sqlite3.Connection, number: str, phone: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = connection.execute(
        "SELECT a.*, c.name AS holder FROM bank_accounts AS a"
        " JOIN bank_customers AS c ON c.id = a.customer_id"
        " WHERE a.number = ? AND c.phone = ?",
        (number, phone),
    ).fetchone()
    return row


def _spent_today(connection: sqlite3.Connection, number: str, day: str) -> int:
    row = connection.execute(
        "SELECT COALESCE(SUM(amount_cents), 0) FROM bank_transfers"
        " WHERE from_account = ? AND local_day = ?",
        (number, day),
    ).fetchone()
    return int(row[0])


# -- tools --------------------------------------------------------------------------------------
async def get_account_balance(ctx: AgentCallContext, account: Account) -> ToolResult:
    """Get the balance of one of the caller's accounts and how much it may still transfer
    today. Works only for accounts registered to the number the caller is calling from; no PIN
    is needed.
    """
    number = _account_number(account)
    if number is None:
        return error("invalid_account", "An account number has 6 digits, like 48213-7.")
    phone = _caller_phone(ctx)
    if not phone:
        return _caller_unidentified()
    store = get_store()
    now = store.now(BRT)

    def query(connection: sqlite3.Connection) -> tuple[sqlite3.Row | None, int]:
        row = _owned_account(connection, number, phone)
        spent = _spent_today(connection, number, now.date().isoformat()) if row else 0
        return row, spent

    row, spent = await store.read(query)
    if row is None:
        call_log(logger, ctx).info("balance refused: account %s is not the caller's", number)
        return error("not_authorized", _NOT_AUTHORIZED)
    balance = _reais(row["balance_cents"])
    remaining = _reais(max(0, row["daily_limit_cents"] - spent))
    return {
        "status": "ok",
        "account": _show_account(number),
        "type": row["kind"],
        "holder": row["holder"],
        "balance": format_brl(balance),
        "balance_value": str(balance),
        "transfer_limit_remaining_today": format_brl(remaining),
        "as_of": now.isoformat(timespec="seconds"),
    }


async def transfer_money(
    ctx: AgentCallContext,
    from_account: Account,
    to_account: Annotated[
        str, Field(description="The Banco Sinal account receiving the money, e.g. 55190-2.")
    ],
    amount: Amount,
    idempotency_key: IdempotencyKey,
) -> ToolResult:
    """Transfer money from one of the caller's accounts to another Banco Sinal account (for
    other banks use pix_transfer). Needs the account's PIN: on status pin_required, say the
    "say" text, wait until the caller has typed the PIN, then call again with the same
    arguments and the same idempotency_key.
    """
    number = _account_number(to_account)
    if number is None:
        return error("invalid_account", "The receiving account number has 6 digits, like 55190-2.")
    return await _transfer(ctx, from_account, amount, idempotency_key, _Internal(number))


async def pix_transfer(
    ctx: AgentCallContext,
    from_account: Account,
    pix_key: Annotated[
        str,
        Field(
            description="The recipient's Pix key: CPF, CNPJ, phone number (+55...), e-mail or"
            " random key."
        ),
    ],
    amount: Amount,
    idempotency_key: IdempotencyKey,
) -> ToolResult:
    """Send a Pix payment from one of the caller's accounts to a Pix key at any bank. Needs the
    account's PIN: on status pin_required, tell the caller the recipient's name and bank, say
    the "say" text, wait until they have typed the PIN, then call again with the same
    arguments and the same idempotency_key.
    """
    key = normalize_pix_key(pix_key)
    if key is None:
        return error(
            "invalid_pix_key",
            "That is not a valid Pix key: give a CPF (11 digits), CNPJ (14 digits), phone"
            " number with area code, e-mail address or random key.",
        )
    return await _transfer(ctx, from_account, amount, idempotency_key, _Pix(key[0]))


@dataclass(frozen=True, slots=True)
class _Internal:
    account: str


@dataclass(frozen=True, slots=True)
class _Pix:
    key: str


@dataclass(frozen=True, slots=True)
class _Recipient:
    name: str
    bank: str
    account: str | None


async def _transfer(
    ctx: AgentCallContext,
    from_account: str,
    amount_value: object,
    idempotency_key: str,
    target: _Internal | _Pix,
) -> ToolResult:
    source = _account_number(from_account)
    if source is None:
        return error("invalid_account", "An account number has 6 digits, like 48213-7.")
    amount = parse_amount(amount_value)
    if amount is None:
        return error(
            "invalid_amount",
            "The amount must be a positive number of reais with at most 2 decimals, e.g. 150.00.",
        )
    key = idempotency_key.strip()
    if not 1 <= len(key) <= 64:
        return error("invalid_idempotency_key", "Send a unique key of 1 to 64 characters.")
    phone = _caller_phone(ctx)
    if not phone:
        return _caller_unidentified()

    store = get_store()
    log = call_log(logger, ctx)
    request = _Request(
        call_id=ctx.call.call_id,
        key=key,
        kind="internal" if isinstance(target, _Internal) else "pix",
        source=source,
        target=target,
        cents=_cents(amount),
        day=store.now(BRT).date().isoformat(),
    )

    # Everything that can refuse the transfer is checked before the caller is asked for a PIN.
    checked = await store.read(lambda connection: request.check(connection, phone))
    if not isinstance(checked, _Checked):
        return checked
    if checked.replay is not None:
        log.info("transfer key %r retried: returning its first result", key)
        return checked.replay

    pin = await _check_pin(ctx, source, checked.pin_hash, checked.recipient, amount)
    if pin is not None:
        return pin

    def move(connection: sqlite3.Connection) -> ToolResult:
        rechecked = request.check(connection, phone)
        if not isinstance(rechecked, _Checked):
            return rechecked
        if rechecked.replay is not None:
            return rechecked.replay
        return request.execute(connection, rechecked.recipient, store.now(BRT).isoformat())

    result = await store.write(move)
    if result.get("status") == "ok":
        log.info(
            "%s transfer %s: %s from %s",
            request.kind,
            result["transfer_id"],
            result["amount"],
            source,
        )
    return result


@dataclass(frozen=True, slots=True)
class _Checked:
    pin_hash: str
    recipient: _Recipient
    replay: ToolResult | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Request:
    call_id: str
    key: str
    kind: Literal["internal", "pix"]
    source: str
    target: _Internal | _Pix
    cents: int
    day: str

    def check(self, connection: sqlite3.Connection, phone: str) -> _Checked | ToolResult:
        """Authorization, replay, recipient, limits and funds, in the order the caller cares."""
        account = _owned_account(connection, self.source, phone)
        if account is None:
            return error("not_authorized", _NOT_AUTHORIZED)
        earlier = connection.execute(
            "SELECT kind, from_account, to_account, pix_key, amount_cents, result"
            " FROM bank_transfers WHERE call_id = ? AND idempotency_key = ?",
            (self.call_id, self.key),
        ).fetchone()
        if earlier is not None:
            same = (earlier["kind"], earlier["from_account"], earlier["amount_cents"]) == (
                self.kind,
                self.source,
                self.cents,
            ) and (earlier["to_account"] or earlier["pix_key"]) == self._target_text
            if not same:
                return error(
                    "idempotency_key_reused",
                    "That idempotency_key was already used for a different transfer in this"
                    " call; use a new key for a new transfer.",
                )
            replay: ToolResult = json.loads(earlier["result"])
            return _Checked(pin_hash=account["pin_hash"], recipient=_NOBODY, replay=replay)
        recipient = self._recipient(connection)
        if isinstance(recipient, dict):
            return recipient
        if recipient.account == self.source:
            return error("same_account", "The money cannot go to the account it comes from.")
        limit = account["transfer_limit_cents"]
        if self.cents > limit:
            return error(
                "limit_exceeded",
                f"The limit per transfer for this account is {format_brl(_reais(limit))}.",
                limit=format_brl(_reais(limit)),
            )
        remaining = account["daily_limit_cents"] - _spent_today(connection, self.source, self.day)
        if self.cents > remaining:
            return error(
                "daily_limit_exceeded",
                "This transfer would go over the account's daily limit of"
                f" {format_brl(_reais(account['daily_limit_cents']))}; it can still transfer"
                f" {format_brl(_reais(max(0, remaining)))} today.",
                remaining_today=format_brl(_reais(max(0, remaining))),
            )
        if self.cents > account["balance_cents"]:
            return error(
                "insufficient_funds",
                "The account does not have enough money for this transfer; its balance is"
                f" {format_brl(_reais(account['balance_cents']))}.",
                balance=format_brl(_reais(account["balance_cents"])),
            )
        return _Checked(pin_hash=account["pin_hash"], recipient=recipient)

    @property
    def _target_text(self) -> str:
        return self.target.account if isinstance(self.target, _Internal) else self.target.key

    def _recipient(self, connection: sqlite3.Connection) -> _Recipient | ToolResult:
        if isinstance(self.target, _Internal):
            row = connection.execute(
                "SELECT c.name FROM bank_accounts AS a"
                " JOIN bank_customers AS c ON c.id = a.customer_id WHERE a.number = ?",
                (self.target.account,),
            ).fetchone()
            if row is None:
                return error(
                    "recipient_not_found",
                    f"There is no {BANK_NAME} account {_show_account(self.target.account)}."
                    " For other banks, use Pix.",
                )
            return _Recipient(name=row["name"], bank=BANK_NAME, account=self.target.account)
        row = connection.execute(
            "SELECT holder_name, bank_name, account_number FROM pix_keys WHERE key = ?",
            (self.target.key,),
        ).fetchone()
        if row is None:
            return error("pix_key_not_found", "No one is registered under that Pix key.")
        return _Recipient(
            name=row["holder_name"], bank=row["bank_name"], account=row["account_number"]
        )

    def execute(
        self, connection: sqlite3.Connection, recipient: _Recipient, created_at: str
    ) -> ToolResult:
        """Record the transfer and move the money (inside the caller's transaction)."""
        cursor = connection.execute(
            "INSERT INTO bank_transfers (call_id, idempotency_key, kind, from_account,"
            " to_account, pix_key, amount_cents, local_day, created_at, result)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '{}')",
            (
                self.call_id,
                self.key,
                self.kind,
                self.source,
                recipient.account,
                self.target.key if isinstance(self.target, _Pix) else None,
                self.cents,
                self.day,
                created_at,
            ),
        )
        transfer_id = f"TRF-{cursor.lastrowid:08d}"
        connection.execute(
            "UPDATE bank_accounts SET balance_cents = balance_cents - ? WHERE number = ?",
            (self.cents, self.source),
        )
        if recipient.account is not None:
            connection.execute(
                "UPDATE bank_accounts SET balance_cents = balance_cents + ? WHERE number = ?",
                (self.cents, recipient.account),
            )
        balance = connection.execute(
            "SELECT balance_cents FROM bank_accounts WHERE number = ?", (self.source,)
        ).fetchone()[0]
        result: dict[str, Any] = {
            "status": "ok",
            "transfer_id": transfer_id,
            "kind": self.kind,
            "amount": format_brl(_reais(self.cents)),
            "from_account": _show_account(self.source),
            "recipient": recipient.name,
            "recipient_bank": recipient.bank,
            "new_balance": format_brl(_reais(balance)),
            "created_at": created_at,
        }
        if isinstance(self.target, _Internal):
            result["to_account"] = _show_account(self.target.account)
        else:
            result["pix_key"] = self.target.key
        connection.execute(
            "UPDATE bank_transfers SET result = ? WHERE id = ?",
            (json.dumps(result, ensure_ascii=False), cursor.lastrowid),
        )
        return result


_NOBODY: Final = _Recipient(name="", bank="", account=None)


async def _check_pin(
    ctx: AgentCallContext, account: str, pin_hash: str, recipient: _Recipient, amount: Decimal
) -> ToolResult | None:
    """None when the caller proved the PIN of ``account`` in this call, else what to tell them."""
    verified: list[str] = ctx.memory.setdefault(_VERIFIED_ACCOUNTS, [])
    if account in verified:
        return None
    failures = int(ctx.memory.get(_PIN_FAILURES, 0))
    if failures >= MAX_PIN_FAILURES:
        return error(
            "pin_locked",
            "Too many wrong PINs in this call: transfers are locked. Offer to transfer the"
            " caller to a human agent (transfer_to_human).",
        )
    digits = ctx.take_digits("#")
    if digits is None:
        return {
            "status": "pin_required",
            "say": PIN_PROMPT,
            "transfer": {
                "amount": format_brl(amount),
                "recipient": recipient.name,
                "recipient_bank": recipient.bank,
            },
        }
    good = len(digits) == PIN_LENGTH and digits.isdigit()
    if good:
        good = await asyncio.to_thread(verify_pin, digits, pin_hash)
    if not good:
        failures += 1
        ctx.memory[_PIN_FAILURES] = failures
        ctx.verified["pin"] = False
        call_log(logger, ctx).info("wrong PIN for account %s (%d)", account, failures)
        left = MAX_PIN_FAILURES - failures
        if left == 0:
            return error(
                "pin_locked",
                "Wrong PIN, and that was the last try: transfers are locked for this call."
                " Offer to transfer the caller to a human agent (transfer_to_human).",
            )
        return error(
            "pin_incorrect",
            f"The PIN is not correct; {left} tries left.",
            attempts_left=left,
            say=f"That PIN is not correct. {PIN_PROMPT}",
        )
    verified.append(account)
    ctx.memory[_PIN_FAILURES] = 0
    ctx.verified["pin"] = True
    return None
