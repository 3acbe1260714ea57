"""`bench/profile_groups.py` charges each py-spy sample to the component the issue's
profile tables name: the loop when the innermost frame is the loop's, otherwise the
innermost project frame."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent.parent / "bench" / "profile_groups.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("profile_groups", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["profile_groups"] = mod
    spec.loader.exec_module(mod)
    return mod


PROC = 'process 1:"python -m bounceback run"'
RUN = "main (proxy/ops/cli.py);run (uvloop/__init__.py)"


def test_samples_go_to_the_innermost_project_frame() -> None:
    pg = load()
    text = "\n".join(
        [
            f"{PROC};{RUN};Gateway.on_submit (proxy/gateway/shell.py);"
            "SqliteStore._write (proxy/store/sqlite.py) 7",
            f"{PROC};{RUN};Gateway.on_submit (proxy/gateway/shell.py);"
            "decide (proxy/core/engine.py);__init__ (<attrs generated methods x>) 3",
            f"{PROC};{RUN};SmppSession.run (proxy/smpp/session.py);"
            "StreamReader.read (asyncio/streams.py) 5",
            f"{PROC};{RUN};EsmeSession.handle_request (proxy/smpp/server.py);"
            "decode (codecs/pdu.py) 2",
            f"{PROC};{RUN};Gateway._decide_receipt (proxy/gateway/shell.py);"
            "parse (codecs/receipt.py) 4",
            f"{PROC};{RUN};Gateway.process (proxy/gateway/shell.py) 6",
            "not a sample line",
        ]
    )
    assert pg.group(text) == {
        "store": 7,
        "attrs construction/evolve": 3,
        "event loop and transport": 5,
        "codec decode+encode": 2,
        "receipt parse and rebuild": 4,
        "gateway orchestration": 6,
    }


def test_render_gives_shares_and_us_per_message() -> None:
    pg = load()
    out = pg.render({"store": 3, "engine": 1}, us_per_message=100.0)
    lines = out.splitlines()
    assert lines[1].split() == ["store", "75.0%", "75"]
    assert lines[2].split() == ["engine", "25.0%", "25"]
    assert lines[-1] == "(4 samples)"
