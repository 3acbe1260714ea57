"""End to end over real sockets: smpplib as the sender, the simulator as the carrier."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bounceback.gateway.shell import Gateway
from harness import gateway, retry_toml, simulator, wait_until, write_config
from smppcodecs.constants import CommandStatus as S
from smpplib_peer import SmpplibSender, receipt_fields

SIM = {"receipt_delay": 0.02, "id_format": "hex", "receipt_id_format": "dec"}


async def bound_sender(
    gw: Gateway, kind: str = "transceiver", pw: str = "acme-pw"
) -> SmpplibSender:
    s = SmpplibSender("127.0.0.1", gw.port)
    status = await asyncio.to_thread(s.bind, kind, "acme", pw)
    assert status == 0
    s.listen()
    return s


async def submit(s: SmpplibSender, number: str, **kw: Any) -> tuple[int, str]:
    seq = await asyncio.to_thread(s.submit, number, b"hello world", **kw)
    return await asyncio.to_thread(s.wait_resp, seq)


async def test_bind_types_and_auth_failures(tmp_path: Path) -> None:
    async with (
        simulator(SIM) as sim,
        gateway(write_config(tmp_path, sim.port or 0, account="max_binds = 3")) as gw,
    ):
        held = []  # keep the binds open (and referenced) while the fourth one tries
        for kind in ("transmitter", "receiver", "transceiver"):
            s = SmpplibSender("127.0.0.1", gw.port)
            assert await asyncio.to_thread(s.bind, kind, "acme", "acme-pw") == 0
            held.append(s)
        # A fourth bind is over max_binds.
        s4 = SmpplibSender("127.0.0.1", gw.port)
        assert (
            await asyncio.to_thread(s4.bind, "transceiver", "acme", "acme-pw") == S.ESME_RBINDFAIL
        )
        bad = SmpplibSender("127.0.0.1", gw.port)
        assert await asyncio.to_thread(bad.bind, "transceiver", "acme", "wrong") == S.ESME_RINVPASWD
        unknown = SmpplibSender("127.0.0.1", gw.port)
        assert (
            await asyncio.to_thread(unknown.bind, "transceiver", "nobody", "x") == S.ESME_RINVSYSID
        )
        for s in held:
            s.close()


async def test_submit_gets_our_id_and_one_rewritten_receipt(tmp_path: Path) -> None:
    async with simulator(SIM) as sim, gateway(write_config(tmp_path, sim.port or 0)) as gw:
        s = await bound_sender(gw)
        status, mid = await submit(s, "447700900100")
        assert status == 0
        assert len(mid) == 16 and mid == mid.upper()
        # The carrier's own id is a different (hex) id; the sender sees only ours.
        assert sim.submissions[-1].message_id != mid
        dl = await asyncio.to_thread(s.wait_delivered, 1, 10.0)
        f = receipt_fields(dl[0])
        assert f["id"] == mid and f["receipted_message_id"] == mid
        assert f["stat"] == "DELIVRD"
        await asyncio.sleep(0.3)
        assert len(s.delivered) == 1
        s.close()


async def test_receipts_wait_for_a_receiver_to_bind(tmp_path: Path) -> None:
    async with simulator(SIM) as sim, gateway(write_config(tmp_path, sim.port or 0)) as gw:
        tx = await bound_sender(gw, "transmitter")
        ids = [(await submit(tx, f"4477009002{i:02d}"))[1] for i in range(5)]
        await wait_until(lambda: gw.counters.get("receipts_matched", 0) >= 5)
        rx = await bound_sender(gw, "receiver")
        got = await asyncio.to_thread(rx.wait_delivered, 5, 10.0)
        # Oldest first, each exactly once.
        assert [receipt_fields(p)["id"] for p in got] == ids
        tx.close()
        rx.close()


async def test_pdus_before_bind_get_invbndsts(tmp_path: Path) -> None:
    import smpplib.client
    import smpplib.smpp

    async with simulator(SIM) as sim, gateway(write_config(tmp_path, sim.port or 0)) as gw:
        # smpplib refuses to send before binding, so its bytes go over a raw socket.
        c = smpplib.client.Client("127.0.0.1", gw.port, allow_unknown_opt_params=True)
        pdu = smpplib.smpp.make_pdu(
            "submit_sm", client=c, source_addr="A", destination_addr="4477", short_message=b"x"
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(pdu.generate())
        head = await reader.readexactly(16)
        body = await reader.readexactly(int.from_bytes(head[:4], "big") - 16)
        resp = smpplib.smpp.parse_pdu(head + body, client=c, allow_unknown_opt_params=True)
        assert resp.command == "submit_sm_resp"
        assert resp.status == S.ESME_RINVBNDSTS
        assert resp.sequence == pdu.sequence
        writer.close()


async def test_throughput_limit_answers_throttled(tmp_path: Path) -> None:
    async with (
        simulator(SIM) as sim,
        gateway(write_config(tmp_path, sim.port or 0, account="throughput = 2.0")) as gw,
    ):
        s = await bound_sender(gw)
        seqs = [await asyncio.to_thread(s.submit, f"44770090030{i}") for i in range(8)]
        results = [await asyncio.to_thread(s.wait_resp, q) for q in seqs]
        statuses = [st for st, _ in results]
        assert statuses.count(S.ESME_RTHROTTLED) >= 4
        assert statuses.count(0) >= 2
        s.close()


async def test_permanent_carrier_error_is_passed_back(tmp_path: Path) -> None:
    scen = dict(SIM, rules=[{"number": "447700900400", "outcomes": ["invalid_dest"]}])
    async with simulator(scen) as sim, gateway(write_config(tmp_path, sim.port or 0)) as gw:
        s = await bound_sender(gw)
        status, mid = await submit(s, "447700900400")
        assert status == S.ESME_RINVDSTADR
        assert mid == ""
        await asyncio.sleep(0.3)
        assert s.delivered == []  # the sender got the error, not a receipt as well
        s.close()


async def test_ack_stored_answers_before_the_carrier(tmp_path: Path) -> None:
    scen = dict(SIM, rules=[{"number": "447700900500", "outcomes": ["no_response"]}])
    async with (
        simulator(scen) as sim,
        gateway(write_config(tmp_path, sim.port or 0, account='ack = "stored"')) as gw,
    ):
        s = await bound_sender(gw)
        status, mid = await submit(s, "447700900500")
        assert status == 0 and mid
        s.close()


async def test_no_carrier_bound_holds_and_submits_when_one_binds(tmp_path: Path) -> None:
    from harness import free_port

    port = free_port()
    cfg = write_config(tmp_path, port)
    from bounceback.config.settings import load_config

    gw = Gateway(load_config(cfg))
    await gw.start()
    try:
        s = await bound_sender(gw)
        status, mid = await submit(s, "447700900600")
        assert status == 0 and mid  # accepted and kept
        from bounceback.smpp.simulator import CarrierSimulator, Scenario

        sim = CarrierSimulator(Scenario.from_mapping(SIM))
        await sim.start(port=port)
        try:
            dl = await asyncio.to_thread(s.wait_delivered, 1, 15.0)
            assert receipt_fields(dl[0])["id"] == mid
            assert sim.count_for("447700900600") == 1
        finally:
            await sim.stop()
        s.close()
    finally:
        await gw.stop()


async def test_carrier_restart_mid_traffic_loses_nothing(tmp_path: Path) -> None:
    async with simulator(SIM) as sim, gateway(write_config(tmp_path, sim.port or 0)) as gw:
        s = await bound_sender(gw)
        ids = []
        for i in range(30):
            if i == 10:
                await sim.disconnect_all()
            status, mid = await submit(s, f"4477009007{i:02d}")
            assert status == 0
            ids.append(mid)
        got = await asyncio.to_thread(s.wait_delivered, 30, 20.0)
        assert sorted({receipt_fields(p)["id"] for p in got}) == sorted(ids)
        assert all(receipt_fields(p)["stat"] == "DELIVRD" for p in got)
        s.close()


async def test_query_and_cancel_answered_from_our_knowledge(tmp_path: Path) -> None:
    """node-smpp as the sender (smpplib has no cancel_sm)."""
    from peers import NodeSender

    scen = dict(SIM, rules=[{"number": "447700900800", "outcomes": ["absent"]}])
    retry = retry_toml(jitter=None, absent_subscriber=(60.0, 1.0, 60.0))
    async with (
        simulator(scen) as sim,
        gateway(write_config(tmp_path, sim.port or 0, retry=retry)) as gw,
        NodeSender() as node,
    ):
        bound = await node.connect(gw.port, system_id="acme", password="acme-pw")
        assert bound["status"] == 0
        resp = await node.submit("447700900800", "hello", data_coding=0)
        assert resp["status"] == 0
        mid = resp["message_id"]
        await wait_until(lambda: gw.counters.get("receipts_matched", 0) >= 1)
        await asyncio.sleep(0.2)
        q = await node.query(mid)
        assert q["status"] == 0 and q["message_state"] == 1  # ENROUTE: held for a retry
        c = await node.cancel(mid, "447700900800")
        assert c["status"] == 0
        msg = await gw.store.get(mid)
        assert msg is not None and msg.state.value == "cancelled"
        q = await node.query(mid)
        assert q["message_state"] == 4  # DELETED
        again = await node.cancel(mid, "447700900800")
        assert again["status"] == S.ESME_RCANCELFAIL
        unknown = await node.query("0000000000000001")
        assert unknown["status"] == S.ESME_RQUERYFAIL
        # Nothing more went to the carrier after the cancel.
        assert sim.count_for("447700900800") == 1
