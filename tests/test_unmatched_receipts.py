"""A carrier receipt no message matches: parked as early (it may have beaten its
submit_sm_resp), then counted unmatched, kept in `unmatched_receipts` and logged (the
1st, 101st, ... with the count so far)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest
from harness import gateway, simulator, wait_until, write_config
from smppcodecs.pdu import DeliverSm
from smppcodecs.receipt import build_receipt_pdu

SIM = {"receipt_delay": 0.02, "id_format": "hex", "receipt_id_format": "dec"}


def receipt(message_id: str) -> DeliverSm:
    now = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)
    return build_receipt_pdu(
        sequence_number=1,
        source_addr="447700900001",
        destination_addr="Acme",
        message_id=message_id,
        stat="DELIVRD",
        submit_date=now,
        done_date=now,
    )


async def test_an_early_receipt_that_never_matches_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bounceback.gateway")
    async with simulator(SIM) as sim, gateway(write_config(tmp_path, sim.port or 0)) as gw:
        assert await gw.on_carrier_deliver("sim", receipt("987654321")) == 0
        assert gw.counters.get("receipts_early") == 1
        assert "unknown id" not in caplog.text  # it may yet be matched
        # Thirty seconds later (the parked receipt is made older) housekeeping gives up.
        for key, (at, pdu) in list(gw.receipts.early.items()):
            gw.receipts.early[key] = (at - 31.0, pdu)
        await wait_until(lambda: gw.counters.get("receipts_unmatched", 0) == 1)
        lines = [r.getMessage() for r in caplog.records if "unknown id" in r.getMessage()]
        assert lines == [
            "sim: receipt for unknown id '987654321', unmatched after 30 s (1 unmatched so far)"
        ]
        # Rate-limited: the next 99 are counted, not logged; the 101st is logged.
        for i in range(100):
            gw.receipts.unmatched("sim", f"id-{i}")
        lines = [r.getMessage() for r in caplog.records if "unknown id" in r.getMessage()]
        assert lines[1:] == ["sim: receipt for unknown id 'id-99' (101 unmatched so far)"]
        assert gw.counters["receipts_unmatched"] == 101
