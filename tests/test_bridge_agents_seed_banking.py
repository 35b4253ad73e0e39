"""Banco Sinal seed tools: authorization, keypad PIN, limits, idempotency, BRL formatting."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge.agents import AgentDirectory, MultiAgentAdapter
from bridge.agents.seed import banking
from bridge.agents.seed.banking import (
    format_brl,
    get_account_balance,
    normalize_pix_key,
    parse_amount,
    pix_transfer,
    transfer_money,
)
from bridge.agents.seed.store import SeedStore
from bridge.tools import ToolContext
from tests.seed_context import Clock, make_ctx
from tests.seed_context import clock_fixture as clock_fixture
from tests.seed_context import store_fixture as store_fixture

ANA = "+5511987654321"  # accounts 48213-7 (checking, R$ 8.450,75) and 48213-8 (savings)
CARLOS = "+5521998765432"  # account 55190-2, R$ 1.250,00, limits R$ 1.000 / R$ 2.000 a day
ANA_PIN = "2468"
CARLOS_PIN = "1357"


async def balance_cents(store: SeedStore, account: str) -> int:
    row = await store.read(
        lambda c: c.execute(
            "SELECT balance_cents FROM bank_accounts WHERE number = ?", (account,)
        ).fetchone()
    )
    return int(row[0])


async def transfers(store: SeedStore) -> list[sqlite3.Row]:
    rows = await store.read(lambda c: c.execute("SELECT * FROM bank_transfers").fetchall())
    return list(rows)


# -- formatting and parsing ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("amount", "text"),
    [
        ("1234.56", "R$ 1.234,56"),
        ("0.5", "R$ 0,50"),
        ("0", "R$ 0,00"),
        ("999.99", "R$ 999,99"),
        ("1000", "R$ 1.000,00"),
        ("1000000.01", "R$ 1.000.000,01"),
        ("-5", "-R$ 5,00"),
        ("8450.75", "R$ 8.450,75"),
    ],
)
def test_format_brl(amount: str, text: str) -> None:
    assert format_brl(Decimal(amount)) == text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("150"), Decimal("150.00")),
        (150, Decimal("150.00")),
        (150.5, Decimal("150.50")),
        ("1234.56", Decimal("1234.56")),
        ("R$ 1.234,56", Decimal("1234.56")),
        ("50,00", Decimal("50.00")),
        (0, None),
        (-5, None),
        ("1.234", None),
        (Decimal("0.001"), None),
        (Decimal("NaN"), None),
        (Decimal("Infinity"), None),
        (True, None),
        ("ten", None),
        (None, None),
        (Decimal("1e12"), None),
    ],
)
def test_parse_amount(value: object, expected: Decimal | None) -> None:
    assert parse_amount(value) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("529.982.247-25", ("52998224725", "cpf")),
        ("11.222.333/0001-81", ("11222333000181", "cnpj")),
        ("11.222.333/0001-82", None),
        ("+55 (11) 91234-5678", ("+5511912345678", "phone")),
        ("11912345678", ("+5511912345678", "phone")),
        ("5511912345678", ("+5511912345678", "phone")),
        ("Carlos.Lima@Example.com.br", ("carlos.lima@example.com.br", "email")),
        (
            "7D9F2C1E-4B3A-4E8F-9A6D-2C5B8E1F0A37",
            ("7d9f2c1e-4b3a-4e8f-9a6d-2c5b8e1f0a37", "random"),
        ),
        ("11111111111", None),
        ("+1 480 555 0123", None),
        ("not a key", None),
    ],
)
def test_normalize_pix_key(raw: str, expected: tuple[str, str] | None) -> None:
    assert normalize_pix_key(raw) == expected


# -- balance ----------------------------------------------------------------------------------
async def test_balance_of_the_callers_account(store: SeedStore) -> None:
    result = await get_account_balance(make_ctx(ANA), "48213-7")
    assert result["status"] == "ok"
    assert result["account"] == "48213-7"
    assert result["holder"] == "Ana Beatriz Souza"
    assert result["balance"] == "R$ 8.450,75"
    assert result["balance_value"] == "8450.75"
    assert result["transfer_limit_remaining_today"] == "R$ 10.000,00"
    assert result["as_of"].startswith("2025-06-03T14:00:00-03:00")


async def test_balance_works_with_the_caller_number_in_any_form(store: SeedStore) -> None:
    for number in ("011987654321", "11987654321", "+55 11 98765-4321"):
        result = await get_account_balance(make_ctx(number), "482137")
        assert result["status"] == "ok", number


async def test_balance_of_someone_elses_account_is_refused(store: SeedStore) -> None:
    result = await get_account_balance(make_ctx(CARLOS), "48213-7")
    assert result["status"] == "error"
    assert result["code"] == "not_authorized"
    assert "R$" not in result["message"]
    # An account that does not exist looks exactly the same: no probing for numbers.
    assert await get_account_balance(make_ctx(CARLOS), "99999-9") == result


async def test_balance_needs_a_caller_number_and_a_valid_account(store: SeedStore) -> None:
    withheld = await get_account_balance(make_ctx(""), "48213-7")
    assert withheld["code"] == "caller_unidentified"
    invalid = await get_account_balance(make_ctx(ANA), "48 21")
    assert invalid == {"status": "error", "code": "invalid_account", "message": invalid["message"]}


# -- PIN ----------------------------------------------------------------------------------------
async def test_transfer_asks_for_the_pin_first(store: SeedStore) -> None:
    ctx = make_ctx(ANA)
    result = await transfer_money(ctx, "48213-7", "55190-2", Decimal("150"), "k1")
    assert result["status"] == "pin_required"
    assert "PIN" in result["say"] and "#" in result["say"]
    assert result["transfer"] == {
        "amount": "R$ 150,00",
        "recipient": "Carlos Eduardo Lima",
        "recipient_bank": "Banco Sinal",
    }
    assert await transfers(store) == []
    assert await balance_cents(store, "482137") == 845075
    assert "pin" not in ctx.verified


async def test_digits_without_the_terminator_are_not_a_pin_yet(store: SeedStore) -> None:
    ctx = make_ctx(ANA, digits="246")
    result = await transfer_money(ctx, "48213-7", "55190-2", Decimal("150"), "k1")
    assert result["status"] == "pin_required"
    assert ctx.dtmf == ["2", "4", "6"]  # kept for the next try
    ctx.add_dtmf("8#")
    assert (await transfer_money(ctx, "48213-7", "55190-2", Decimal("150"), "k1"))["status"] == "ok"


async def test_wrong_pin_moves_nothing(store: SeedStore) -> None:
    ctx = make_ctx(ANA, digits="1234#")
    result = await transfer_money(ctx, "48213-7", "55190-2", Decimal("150"), "k1")
    assert result["status"] == "error"
    assert result["code"] == "pin_incorrect"
    assert result["attempts_left"] == 2
    assert "PIN" in result["say"]
    assert ctx.verified["pin"] is False
    assert ctx.dtmf == []
    assert await transfers(store) == []
    assert await balance_cents(store, "482137") == 845075


async def test_a_pin_of_the_wrong_length_is_wrong(store: SeedStore) -> None:
    ctx = make_ctx(ANA, digits="24680#")
    result = await transfer_money(ctx, "48213-7", "55190-2", Decimal("150"), "k1")
    assert result["code"] == "pin_incorrect"


async def test_right_pin_moves_the_money(store: SeedStore) -> None:
    ctx = make_ctx(ANA, digits=f"{ANA_PIN}#")
    result = await transfer_money(ctx, "48213-7", "55190-2", Decimal("150.25"), "k1")
    assert result == {
        "status": "ok",
        "transfer_id": "TRF-00000001",
        "kind": "internal",
        "amount": "R$ 150,25",
        "from_account": "48213-7",
        "recipient": "Carlos Eduardo Lima",
        "recipient_bank": "Banco Sinal",
        "new_balance": "R$ 8.300,50",
        "created_at": "2025-06-03T14:00:00-03:00",
        "to_account": "55190-2",
    }
    assert ctx.verified["pin"] is True
    assert await balance_cents(store, "482137") == 845075 - 15025
    assert await balance_cents(store, "551902") == 125000 + 15025
    assert len(await transfers(store)) == 1


async def test_the_pin_is_asked_once_per_account_per_call(store: SeedStore) -> None:
    ctx = make_ctx(ANA, digits=f"{ANA_PIN}#")
    assert (await transfer_money(ctx, "48213-7", "55190-2", Decimal("10"), "k1"))["status"] == "ok"
    assert (await transfer_money(ctx, "48213-7", "55190-2", Decimal("20"), "k2"))["status"] == "ok"
    # The savings account has its own PIN check.
    other = await transfer_money(ctx, "48213-8", "55190-2", Decimal("20"), "k3")
    assert other["status"] == "pin_required"


async def test_three_wrong_pins_lock_transfers_for_the_call(store: SeedStore) -> None:
    ctx = make_ctx(ANA)
    codes = []
    for _ in range(3):
        ctx.add_dtmf("0000#")
        result = await transfer_money(ctx, "48213-7", "55190-2", Decimal("10"), "k1")
        codes.append(result["code"])
    assert codes == ["pin_incorrect", "pin_incorrect", "pin_locked"]
    ctx.add_dtmf(f"{ANA_PIN}#")
    locked = await transfer_money(ctx, "48213-7", "55190-2", Decimal("10"), "k1")
    assert locked["code"] == "pin_locked"
    assert "transfer_to_human" in locked["message"]
    assert await transfers(store) == []


# -- authorization, validation, limits --------------------------------------------------------
async def test_transfer_from_someone_elses_account_is_refused(store: SeedStore) -> None:
    ctx = make_ctx(CARLOS, digits=f"{ANA_PIN}#")
    result = await transfer_money(ctx, "48213-7", "55190-2", Decimal("10"), "k1")
    assert result["code"] == "not_authorized"
    assert ctx.dtmf == ["2", "4", "6", "8", "#"]  # the PIN was not even read
    assert await transfers(store) == []
    withheld = await transfer_money(make_ctx(""), "48213-7", "55190-2", Decimal("10"), "k1")
    assert withheld["code"] == "caller_unidentified"


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        (("4821", "55190-2", Decimal("10"), "k"), "invalid_account"),
        (("48213-7", "5519", Decimal("10"), "k"), "invalid_account"),
        (("48213-7", "55190-2", Decimal("0"), "k"), "invalid_amount"),
        (("48213-7", "55190-2", Decimal("-3"), "k"), "invalid_amount"),
        (("48213-7", "55190-2", Decimal("1.005"), "k"), "invalid_amount"),
        (("48213-7", "55190-2", Decimal("10"), "  "), "invalid_idempotency_key"),
        (("48213-7", "55190-2", Decimal("10"), "k" * 65), "invalid_idempotency_key"),
        (("48213-7", "48213-7", Decimal("10"), "k"), "same_account"),
        (("48213-7", "11111-1", Decimal("10"), "k"), "recipient_not_found"),
    ],
)
async def test_transfer_validation(
    store: SeedStore, arguments: tuple[str, str, Decimal, str], code: str
) -> None:
    result = await transfer_money(make_ctx(ANA, digits=f"{ANA_PIN}#"), *arguments)
    assert result["status"] == "error"
    assert result["code"] == code
    assert result["message"]


async def test_per_transfer_limit(store: SeedStore) -> None:
    ctx = make_ctx(ANA, digits=f"{ANA_PIN}#")
    result = await transfer_money(ctx, "48213-8", "55190-2", Decimal("5000.01"), "k1")
    assert result["code"] == "limit_exceeded"
    assert result["limit"] == "R$ 5.000,00"
    assert ctx.dtmf  # refused before the PIN was asked for
    ok = await transfer_money(ctx, "48213-8", "55190-2", Decimal("5000.00"), "k2")
    assert ok["status"] == "ok"


async def test_daily_limit_counts_every_transfer_of_the_day(store: SeedStore, clock: Clock) -> None:
    ctx = make_ctx(ANA, digits=f"{ANA_PIN}#")
    for key in ("k1", "k2"):
        result = await transfer_money(ctx, "48213-8", "55190-2", Decimal("4000"), key)
        assert result["status"] == "ok"
    pix = await pix_transfer(ctx, "48213-8", "+5511912345678", Decimal("2000"), "k3")
    assert pix["status"] == "ok"
    over = await transfer_money(ctx, "48213-8", "55190-2", Decimal("0.01"), "k4")
    assert over["code"] == "daily_limit_exceeded"
    assert over["remaining_today"] == "R$ 0,00"
    balance = await get_account_balance(ctx, "48213-8")
    assert balance["transfer_limit_remaining_today"] == "R$ 0,00"
    # São Paulo's next day starts at 03:00 UTC.
    clock.now = clock.now.replace(day=4, hour=3)
    again = await transfer_money(ctx, "48213-8", "55190-2", Decimal("0.01"), "k5")
    assert again["status"] == "ok"


async def test_insufficient_funds(store: SeedStore) -> None:
    ctx = make_ctx(CARLOS, digits=f"{CARLOS_PIN}#")
    assert (await transfer_money(ctx, "55190-2", "48213-7", Decimal("1000"), "k1"))[
        "status"
    ] == "ok"
    result = await transfer_money(ctx, "55190-2", "48213-7", Decimal("250.01"), "k2")
    assert result["code"] == "insufficient_funds"
    assert result["balance"] == "R$ 250,00"
    assert await balance_cents(store, "551902") == 25000


# -- idempotency ------------------------------------------------------------------------------
async def test_a_retry_with_the_same_key_moves_money_once(store: SeedStore) -> None:
    ctx = make_ctx(ANA, digits=f"{ANA_PIN}#")
    first = await transfer_money(ctx, "48213-7", "55190-2", Decimal("100"), "retry-me")
    second = await transfer_money(ctx, "48213-7", "55190-2", Decimal("100"), "retry-me")
    assert first["status"] == "ok"
    assert second == first
    assert len(await transfers(store)) == 1
    assert await balance_cents(store, "482137") == 845075 - 10000
    assert await balance_cents(store, "551902") == 125000 + 10000


async def test_a_retry_needs_no_pin_and_is_not_limited_again(store: SeedStore) -> None:
    ctx = make_ctx(ANA, digits=f"{ANA_PIN}#")
    first = await transfer_money(ctx, "48213-8", "55190-2", Decimal("5000"), "big")
    retry_ctx = make_ctx(ANA, call_id=ctx.call.call_id)  # same call, PIN state lost
    await transfer_money(ctx, "48213-8", "55190-2", Decimal("5000"), "big2")
    assert await transfer_money(retry_ctx, "48213-8", "55190-2", Decimal("5000"), "big") == first


async def test_concurrent_retries_move_money_once(store: SeedStore) -> None:
    ctx = make_ctx(ANA, digits=f"{ANA_PIN}#")
    ctx.memory["banking.pin_verified_accounts"] = ["482137"]
    results = await asyncio.gather(
        *(transfer_money(ctx, "48213-7", "55190-2", Decimal("75"), "same") for _ in range(5))
    )
    assert all(result == results[0] for result in results)
    assert len(await transfers(store)) == 1
    assert await balance_cents(store, "482137") == 845075 - 7500


async def test_a_key_reused_for_another_transfer_is_refused(store: SeedStore) -> None:
    ctx = make_ctx(ANA, digits=f"{ANA_PIN}#")
    await transfer_money(ctx, "48213-7", "55190-2", Decimal("100"), "k1")
    for other in (
        transfer_money(ctx, "48213-7", "55190-2", Decimal("101"), "k1"),
        pix_transfer(ctx, "48213-7", "carlos.lima@example.com.br", Decimal("100"), "k1"),
    ):
        result = await other
        assert result["code"] == "idempotency_key_reused"
    assert len(await transfers(store)) == 1


async def test_keys_are_kept_per_call(store: SeedStore) -> None:
    first = make_ctx(ANA, digits=f"{ANA_PIN}#")
    second = make_ctx(ANA, digits=f"{ANA_PIN}#")
    a = await transfer_money(first, "48213-7", "55190-2", Decimal("100"), "t1")
    b = await transfer_money(second, "48213-7", "55190-2", Decimal("100"), "t1")
    assert (a["status"], b["status"]) == ("ok", "ok")
    assert a["transfer_id"] != b["transfer_id"]
    assert len(await transfers(store)) == 2


async def test_the_money_moves_in_one_transaction(
    store: SeedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = banking._Request.execute

    def crash_after_moving(self: Any, *args: Any) -> Any:
        original(self, *args)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(banking._Request, "execute", crash_after_moving)
    ctx = make_ctx(ANA, digits=f"{ANA_PIN}#")
    with pytest.raises(sqlite3.OperationalError):
        await transfer_money(ctx, "48213-7", "55190-2", Decimal("100"), "k1")
    assert await transfers(store) == []
    assert await balance_cents(store, "482137") == 845075
    assert await balance_cents(store, "551902") == 125000


# -- Pix ----------------------------------------------------------------------------------------
async def test_pix_to_another_bank(store: SeedStore) -> None:
    ctx = make_ctx(ANA)
    asked = await pix_transfer(ctx, "48213-7", "+55 11 91234-5678", Decimal("80"), "p1")
    assert asked["status"] == "pin_required"
    assert asked["transfer"]["recipient"] == "João Pereira da Silva"
    assert asked["transfer"]["recipient_bank"] == "Banco Exemplo"
    ctx.add_dtmf(f"{ANA_PIN}#")
    result = await pix_transfer(ctx, "48213-7", "+55 11 91234-5678", Decimal("80"), "p1")
    assert result["status"] == "ok"
    assert result["kind"] == "pix"
    assert result["pix_key"] == "+5511912345678"
    assert result["amount"] == "R$ 80,00"
    assert result["new_balance"] == "R$ 8.370,75"
    assert "to_account" not in result
    assert await balance_cents(store, "482137") == 845075 - 8000
    total = await store.read(
        lambda c: c.execute("SELECT SUM(balance_cents) FROM bank_accounts").fetchone()[0]
    )
    assert total == 845075 + 3210000 + 125000 + 2390010 - 8000  # the money left the bank


async def test_pix_to_a_key_at_this_bank_credits_the_account(store: SeedStore) -> None:
    ctx = make_ctx(ANA, digits=f"{ANA_PIN}#")
    result = await pix_transfer(ctx, "48213-7", "Carlos.Lima@example.com.br", Decimal("50"), "p1")
    assert result["status"] == "ok"
    assert result["recipient"] == "Carlos Eduardo Lima"
    assert await balance_cents(store, "551902") == 125000 + 5000


async def test_pix_errors(store: SeedStore) -> None:
    ctx = make_ctx(ANA, digits=f"{ANA_PIN}#")
    invalid = await pix_transfer(ctx, "48213-7", "12345", Decimal("50"), "p1")
    assert invalid["code"] == "invalid_pix_key"
    unknown = await pix_transfer(ctx, "48213-7", "someone@example.org", Decimal("50"), "p1")
    assert unknown["code"] == "pix_key_not_found"
    own = await pix_transfer(ctx, "48213-7", "529.982.247-25", Decimal("50"), "p1")
    assert own["code"] == "same_account"
    other = await pix_transfer(make_ctx(CARLOS), "48213-7", "52998224725", Decimal("5"), "p2")
    assert other["code"] == "not_authorized"
    assert await transfers(store) == []


# -- through the multi-agent adapter ------------------------------------------------------------
async def test_pin_flow_through_the_adapter(store: SeedStore) -> None:
    """JSON arguments as the model writes them, keypad digits as the session records them."""
    directory = AgentDirectory.load(Path(__file__).resolve().parent.parent / "config" / "agents")
    ctx = make_ctx(ANA, "+551155550100")
    adapter = MultiAgentAdapter(directory, ctx)
    assert ctx.current_agent == "banking"
    arguments = json.dumps(
        {
            "from_account": "48213-7",
            "pix_key": "11912345678",
            "amount": 80.5,
            "idempotency_key": "t1",
        }
    )

    def tool_context(dtmf: str) -> ToolContext:
        return ToolContext(call=ctx.call, function_call_id="fc1", dtmf=dtmf)

    asked = await adapter.call("pix_transfer", arguments, tool_context(""))
    assert asked["status"] == "pin_required"
    done = await adapter.call("pix_transfer", arguments, tool_context(f"{ANA_PIN}#"))
    assert (done["status"], done["amount"]) == ("ok", "R$ 80,50")
    again = await adapter.call("pix_transfer", arguments, tool_context(f"{ANA_PIN}#"))
    assert again == done
    text_amount = arguments.replace("80.5", '"80.50"')
    assert await adapter.call("pix_transfer", text_amount, tool_context(f"{ANA_PIN}#")) == done
    assert len(await transfers(store)) == 1
