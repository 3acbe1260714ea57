"""TLS towards senders and towards carriers, over real TLS connections.

A test CA, a server certificate for 127.0.0.1/localhost, a client certificate and a
second, unrelated CA are made with the openssl command line at the start of the
module. Senders: our own EsmeClient over Python's ssl, and smpplib with
``ssl_context=``. Carriers: the simulator behind a TLS front that forwards to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import smpplib.client
from bounceback.config.settings import Carrier, ConfigError, ServerConfig, load_config
from bounceback.config.tls import carrier_context, describe_peer, listener_context
from bounceback.gateway.shell import Gateway
from bounceback.ops.cli import main
from bounceback.smpp.client import EsmeClient
from bounceback.smpp.session import SessionClosed
from harness import ProxyProcess, free_port, gateway, simulator, wait_until, write_config
from smppcodecs.pdu import BindTransceiver, DeliverSm
from smpplib_peer import SmpplibSender, receipt_fields

SIM = {"receipt_delay": 0.02}

# ---------------------------------------------------------------- a test PKI


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA that signs everything below
    server_cert: Path  # CN=localhost, SAN DNS:localhost, IP:127.0.0.1
    server_key: Path
    client_cert: Path  # CN=acme-client, clientAuth
    client_key: Path
    other_ca: Path  # an unrelated CA
    other_server_cert: Path  # a server certificate the unrelated CA signed
    other_server_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=d,
    )  # fmt: skip


def _make_leaf(d: Path, ca: str, name: str, cn: str, usage: str, san: str) -> None:
    (d / f"{name}.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage={usage}\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n" + (f"subjectAltName={san}\n" if san else "")
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=d,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "test-ca")
    _make_ca(d, "other-ca")
    san = "DNS:localhost,IP:127.0.0.1"
    _make_leaf(d, "test-ca", "server", "localhost", "serverAuth", san)
    _make_leaf(d, "test-ca", "client", "acme-client", "clientAuth", "")
    _make_leaf(d, "other-ca", "other-server", "localhost", "serverAuth", san)
    return Pki(
        ca=d / "test-ca.pem",
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        client_cert=d / "client.pem",
        client_key=d / "client.key",
        other_ca=d / "other-ca.pem",
        other_server_cert=d / "other-server.pem",
        other_server_key=d / "other-server.key",
    )


def client_ctx(pki: Pki, *, cert: bool = False, hostname: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.check_hostname = hostname
    if cert:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return ctx


def tls_server_lines(pki: Pki, *, client_ca: bool = False, plain: bool = True) -> str:
    lines = [
        "tls_port = 0",
        f'tls_cert = "{pki.server_cert}"',
        f'tls_key = "{pki.server_key}"',
        f"plain = {'true' if plain else 'false'}",
    ]
    if client_ca:
        lines.append(f'tls_client_ca = "{pki.ca}"')
    return "\n".join(lines)


def tls_config(tmp: Path, carrier_port: int, server_lines: str, **kw: Any) -> Path:
    """The harness config with extra [server] keys (they go before [[accounts]])."""
    path = write_config(tmp, carrier_port, **kw)
    text = path.read_text().replace("submit_wait = 3.0\n", f"submit_wait = 3.0\n{server_lines}\n")
    path.write_text(text)
    return path


class Receipts:
    """Collects the deliver_sm a client gets (its on_deliver hook)."""

    def __init__(self) -> None:
        self.got: list[DeliverSm] = []

    def __call__(self, pdu: DeliverSm) -> int:
        self.got.append(pdu)
        return 0


async def tls_client(port: int, ctx: ssl.SSLContext) -> tuple[EsmeClient, Receipts]:
    """Our own ESME client over TLS, bound as transceiver, and its receipts."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
    )
    c = EsmeClient(reader, writer, name="tls-client", window=10, inactivity_timeout=300.0)
    receipts = c.on_deliver = Receipts()
    c.spawn(c.run())
    resp = await c.request(BindTransceiver(sequence_number=0, system_id="acme", password="acme-pw"))
    if resp.command_status != 0:
        await c.close()
        raise ConnectionError(f"bind refused: 0x{resp.command_status:08X}")
    return c, receipts


# ---------------------------------------------------------------- contexts


def test_listener_context_only_with_a_certificate(pki: Pki) -> None:
    assert listener_context(ServerConfig()) is None
    ctx = listener_context(ServerConfig(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key)))
    assert ctx is not None
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_NONE
    with_ca = listener_context(
        ServerConfig(
            tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), tls_client_ca=str(pki.ca)
        )
    )
    assert with_ca is not None and with_ca.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ssl.SSLError):  # a certificate with somebody else's key
        listener_context(ServerConfig(tls_cert=str(pki.server_cert), tls_key=str(pki.client_key)))


def test_carrier_context_verifies_by_default(pki: Pki) -> None:
    base = Carrier(name="c", host="127.0.0.1", system_id="x")
    assert carrier_context(base) is None
    ctx = carrier_context(Carrier(name="c", host="h", system_id="x", tls=True, tls_ca=str(pki.ca)))
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    off = carrier_context(Carrier(name="c", host="h", system_id="x", tls=True, tls_verify=False))
    assert off is not None and off.verify_mode == ssl.CERT_NONE and not off.check_hostname


def test_describe_peer_without_tls() -> None:
    assert describe_peer(None) == "plain"


def test_config_checks_the_tls_keys(tmp_path: Path, pki: Pki) -> None:
    cases = {
        'tls_key = "{key}"': "server.tls_key: needs tls_cert",
        'tls_client_ca = "{ca}"': "server.tls_client_ca: needs tls_cert",
        "plain = false": "server.plain: false leaves no listener",
        'tls_cert = "missing.pem"': "server.tls_cert: file not found",
        'tls_cert = "{cert}"\ntls_key = "{key}"\nport = 2775\ntls_port = 2775': (
            "server.tls_port: must differ from port (2775)"
        ),
        "failed_bind_limit = 0": "server.failed_bind_limit: expected an integer of at least 1",
        "lockout_seconds = 0": "server.lockout_seconds: expected a number greater than 0",
    }
    for i, (lines, expected) in enumerate(cases.items()):
        body = lines.format(key=pki.server_key, ca=pki.ca, cert=pki.server_cert)
        path = tmp_path / f"c{i}.toml"
        path.write_text(
            f"[server]\n{body}\n"
            '[[accounts]]\nsystem_id = "a"\npassword = "p"\n'
            '[[carriers]]\nname = "c"\nhost = "h"\nsystem_id = "s"\npassword = "p"\n'
        )
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert expected in str(info.value), (lines, str(info.value))
        assert str(path) in str(info.value)


def test_check_loads_every_certificate_key_and_ca_file(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files that exist but are no certificate, key or CA are refused by `check`
    (and so by `run`) as FILE: KEY: reason, instead of failing when the proxy starts."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not a certificate\n")
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    encrypted = tmp_path / "encrypted.key"
    _openssl(
        "pkey", "-in", str(pki.server_key), "-aes256", "-passout", "pass:secret",
        "-out", str(encrypted), cwd=tmp_path,
    )  # fmt: skip
    cert, key = pki.server_cert, pki.server_key
    no_cert = "no PEM certificate in the file"
    cases = [
        (f'tls_cert = "{garbage}"\ntls_key = "{key}"', "", "server.tls_cert", no_cert),
        (
            f'tls_cert = "{broken}"\ntls_key = "{key}"',
            "",
            "server.tls_cert",
            "not a valid PEM certificate file ([X509] PEM lib)",
        ),
        (
            f'tls_cert = "{cert}"\ntls_key = "{garbage}"',
            "",
            "server.tls_key",
            "no usable PEM private key in the file ([SSL] PEM lib)",
        ),
        (
            f'tls_cert = "{cert}"\ntls_key = "{pki.client_key}"',
            "",
            "server.tls_key",
            "the private key does not match the certificate in tls_cert",
        ),
        (
            f'tls_cert = "{cert}"\ntls_key = "{encrypted}"',
            "",
            "server.tls_key",
            "the private key is encrypted with a passphrase, which cannot be given: "
            "store it unencrypted, readable by the proxy's user only",
        ),
        (
            f'tls_cert = "{cert}"',
            "",
            "server.tls_cert",
            "no PEM private key after the certificate (or set tls_key)",
        ),
        (
            f'tls_cert = "{cert}"\ntls_key = "{key}"\ntls_client_ca = "{garbage}"',
            "",
            "server.tls_client_ca",
            no_cert,
        ),
        ("", f'tls = true\ntls_ca = "{garbage}"\n', "carriers[0].tls_ca", no_cert),
        ("", f'[feed]\ntls = true\ntls_ca = "{key}"\n', "feed.tls_ca", no_cert),
    ]
    for i, (server, tail, name, reason) in enumerate(cases):
        path = tmp_path / f"c{i}.toml"
        path.write_text(
            f"[server]\n{server}\n"
            '[[accounts]]\nsystem_id = "a"\npassword = "p"\n'
            '[[carriers]]\nname = "c"\nhost = "h"\nsystem_id = "s"\npassword = "p"\n' + tail
        )
        assert main(["check", "--config", str(path)]) == 2, server + tail
        err = capsys.readouterr().err.splitlines()
        assert err == [f"{path}: {name}: {reason}", "configuration is invalid: 1 problem"]
    # The same files, good ones: valid.
    path = tmp_path / "good.toml"
    path.write_text(
        f'[server]\ntls_cert = "{cert}"\ntls_key = "{key}"\ntls_client_ca = "{pki.ca}"\n'
        '[[accounts]]\nsystem_id = "a"\npassword = "p"\n'
        '[[carriers]]\nname = "c"\nhost = "h"\nsystem_id = "s"\npassword = "p"\n'
        f'tls = true\ntls_ca = "{pki.ca}"\n[feed]\ntls = true\ntls_ca = "{pki.ca}"\n'
    )
    assert main(["check", "--config", str(path)]) == 0, capsys.readouterr().err


def test_run_with_a_bad_certificate_exits_at_once(tmp_path: Path) -> None:
    """It used to start the plain listener and the carrier link and then hang."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not a certificate\n")
    path = tls_config(tmp_path, free_port(), f'tls_port = 0\ntls_cert = "{garbage}"')
    done = subprocess.run(
        [sys.executable, "-m", "bounceback", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,  # a guard against the old hang, not a measurement
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == f"{path}: server.tls_cert: no PEM certificate in the file"
    assert "Traceback" not in done.stderr
    assert done.stdout == ""  # never said it was listening


# ---------------------------------------------------------------- senders over TLS


async def test_tls_sender_binds_and_gets_a_receipt(tmp_path: Path, pki: Pki) -> None:
    async with simulator(SIM) as sim:
        cfg = tls_config(tmp_path, sim.port or 0, tls_server_lines(pki))
        async with gateway(cfg) as gw:
            assert gw.tls_port and gw.port and gw.tls_port != gw.port
            c, receipts = await tls_client(gw.tls_port, client_ctx(pki))
            try:
                assert c.writer.get_extra_info("ssl_object") is not None
                resp = await c.submit("447700900901", b"over tls")
                assert resp.command_status == 0
                mid = getattr(resp, "message_id", "")
                await wait_until(lambda: len(receipts.got) >= 1)
                assert receipts.got[0].tlvs.get(0x001E) == mid  # receipted_message_id is ours
                assert sim.submissions[-1].destination == "447700900901"
            finally:
                await c.unbind()


async def test_run_with_a_tls_listener_stays_on_asyncio(tmp_path: Path, pki: Pki) -> None:
    """`event_loop = "auto"` picks asyncio when the TLS listener is on: under uvloop a
    sender's ClientHello can be read before the handshake starts, stalling it."""
    async with simulator(SIM) as sim:
        tls_port = free_port()
        lines = tls_server_lines(pki).replace("tls_port = 0", f"tls_port = {tls_port}")
        proxy = ProxyProcess(tls_config(tmp_path, sim.port or 0, lines))
        await asyncio.to_thread(proxy.start)
        try:
            for i in range(5):  # each connection sends its ClientHello at once
                c, _ = await tls_client(tls_port, client_ctx(pki))
                try:
                    resp = await c.submit(f"44770090091{i}", b"over tls")
                    assert resp.command_status == 0
                finally:
                    await c.unbind()
        finally:
            assert await asyncio.to_thread(proxy.terminate) == 0
    out = proxy.output()
    assert re.findall(r"INFO bounceback: event loop: (\S+)", out) == ["asyncio"]
    assert "TLS handshake with" not in out  # no handshake failed


async def test_smpplib_sender_over_tls(tmp_path: Path, pki: Pki) -> None:
    async with simulator(SIM) as sim:
        cfg = tls_config(tmp_path, sim.port or 0, tls_server_lines(pki, plain=False))
        async with gateway(cfg) as gw:
            assert gw.port == 0 and gw.tls_port  # TLS only: no plain listener
            ctx = client_ctx(pki, hostname=False)  # smpplib gives no server_hostname
            s = SmpplibSender("127.0.0.1", gw.tls_port)
            s.client = smpplib.client.Client(
                "127.0.0.1", gw.tls_port, timeout=5, ssl_context=ctx, allow_unknown_opt_params=True
            )
            s.client.set_message_sent_handler(s._sent)
            s.client.set_message_received_handler(s._received)
            s.client.set_error_pdu_handler(lambda pdu: None)
            assert await asyncio.to_thread(s.bind, "transceiver", "acme", "acme-pw") == 0
            s.listen()
            try:
                seq = await asyncio.to_thread(s.submit, "447700900902", b"smpplib tls")
                status, mid = await asyncio.to_thread(s.wait_resp, seq)
                assert status == 0 and mid
                got = await asyncio.to_thread(s.wait_delivered, 1, 10.0)
                assert receipt_fields(got[0])["id"] == mid
                assert receipt_fields(got[0])["stat"] == "DELIVRD"
            finally:
                s.close()


async def test_client_certificate_required(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bounceback")
    async with simulator(SIM) as sim:
        cfg = tls_config(tmp_path, sim.port or 0, tls_server_lines(pki, client_ca=True))
        async with gateway(cfg) as gw:
            # With the certificate: binds, and the log names the client.
            good, _ = await tls_client(gw.tls_port, client_ctx(pki, cert=True))
            assert (await good.submit("447700900903", b"x")).command_status == 0
            assert "CN=acme-client" in caplog.text
            # Without: the handshake fails on our side; the client never gets a bind_resp.
            refused_with: BaseException | None = None
            try:
                bad, _ = await tls_client(gw.tls_port, client_ctx(pki, cert=False))
            except (SessionClosed, OSError, asyncio.IncompleteReadError) as exc:
                refused_with = exc
            else:
                await bad.close()
            assert refused_with is not None
            await wait_until(lambda: gw.counters.get("tls_handshake_failed", 0) >= 1)
            assert "TLS handshake with 127.0.0.1 failed" in caplog.text
            # A plain SMPP client on the TLS port fails the same way.
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.tls_port)
            writer.write(
                BindTransceiver(sequence_number=1, system_id="acme", password="x").encode()
            )
            assert await asyncio.wait_for(reader.read(), 10.0) == b""
            writer.close()
            await wait_until(lambda: gw.counters.get("tls_handshake_failed", 0) >= 2)
            # Nothing was counted as a failed bind, and the good client still works.
            assert gw.counters.get("binds_failed", 0) == 0
            assert (await good.submit("447700900904", b"y")).command_status == 0
            await good.unbind()
            await wait_until(lambda: gw.access.connections.total == 0)


# ---------------------------------------------------------------- carriers over TLS


@contextlib.asynccontextmanager
async def tls_front(cert: Path, key: Path, target_port: int) -> AsyncIterator[int]:
    """A TLS server that forwards each connection to a plain one on `target_port`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    tasks: set[asyncio.Task[Any]] = set()

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            dst.close()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            w.close()
            return
        both = asyncio.gather(pipe(r, uw), pipe(ur, w))
        tasks.add(both)  # type: ignore[arg-type]
        await both

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for t in tasks:
            t.cancel()


def carrier_tls_lines(ca: Path, verify: bool = True) -> str:
    return f'tls = true\ntls_ca = "{ca}"\ntls_verify = {"true" if verify else "false"}'


async def test_carrier_over_tls_with_our_ca(tmp_path: Path, pki: Pki) -> None:
    async with (
        simulator(SIM) as sim,
        tls_front(pki.server_cert, pki.server_key, sim.port or 0) as port,
        gateway(write_config(tmp_path, port, carrier=carrier_tls_lines(pki.ca))) as gw,
    ):
        link = gw.links["sim"]
        assert link.bound and link.tx is not None
        assert link.tx.writer.get_extra_info("ssl_object") is not None
        c, receipts = await plain_client(gw.port)
        try:
            resp = await c.submit("447700900905", b"carrier tls")
            assert resp.command_status == 0
            await wait_until(lambda: len(receipts.got) >= 1)
            assert sim.submissions[-1].destination == "447700900905"
        finally:
            await c.unbind()


async def plain_client(port: int) -> tuple[EsmeClient, Receipts]:
    c = await EsmeClient.connect("127.0.0.1", port, "acme", "acme-pw")
    receipts = c.on_deliver = Receipts()
    return c, receipts


async def test_carrier_with_a_wrong_ca_is_not_bound(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bounceback")
    async with (
        simulator(SIM) as sim,
        # The carrier presents a certificate from a CA we were not told to trust.
        tls_front(pki.other_server_cert, pki.other_server_key, sim.port or 0) as port,
    ):
        cfg = load_config(write_config(tmp_path, port, carrier=carrier_tls_lines(pki.ca)))
        gw = Gateway(cfg)
        await gw.start()
        try:
            await wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in caplog.text)
            link = gw.links["sim"]
            assert not link.bound and link.binds == 0
            assert sim.sessions == [] or all(s.system_id is None for s in sim.sessions)
            line = next(r for r in caplog.records if "CERTIFICATE_VERIFY_FAILED" in r.getMessage())
            assert line.levelno == logging.WARNING
            assert line.getMessage().startswith("sim: cannot bind:")
            # A sender's message is held (not lost, not refused) while no carrier is bound.
            c, _ = await plain_client(gw.port)
            resp = await c.submit("447700900906", b"held")
            assert resp.command_status == 0
            mid = getattr(resp, "message_id", "")
            await wait_state(gw, mid, "held")
            await c.unbind()
        finally:
            await gw.stop()


async def wait_state(gw: Gateway, mid: str, state: str, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        msg = await gw.store.get(mid)
        if msg is not None and msg.state.value == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{mid} never reached {state}")


async def test_carrier_verification_can_be_turned_off(tmp_path: Path, pki: Pki) -> None:
    async with (
        simulator(SIM) as sim,
        tls_front(pki.other_server_cert, pki.other_server_key, sim.port or 0) as port,
        gateway(
            write_config(tmp_path, port, carrier=carrier_tls_lines(pki.ca, verify=False))
        ) as gw,
    ):
        assert gw.links["sim"].bound  # explicitly unverified: binds anyway
