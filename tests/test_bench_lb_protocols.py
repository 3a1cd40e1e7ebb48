"""The load-balancer benchmark (bench/lb_protocols.py) measures something in every protocol:
its smallest run gets every event to every client through nginx, plain and over TLS, in
HTTP/1.1 and HTTP/2, and says what that cost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from processes import require_tool

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def test_quick_run_delivers_every_event_to_every_client_in_each_protocol(tmp_path: Path) -> None:
    for tool in ("h2load", "nginx", "redis-server"):
        require_tool(tool)
    done = subprocess.run(
        [sys.executable, str(BENCH / "lb_protocols.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["system"]: r for r in json.loads((tmp_path / "results.json").read_text())["rows"]}
    assert list(rows) == ["h1", "h1-tls", "h2-tls", "h2-tls-1"]
    wire = {
        "h1": ("http/1.1", False),
        "h1-tls": ("http/1.1", True),
        "h2-tls": ("h2", True),
        "h2-tls-1": ("h2", True),
    }
    for key, row in rows.items():
        assert "error" not in row, row
        (figures,) = row["rounds"]
        events, clients = figures["events"], figures["clients"]
        assert events > 0 and clients > 0, figures
        # every stream opened once, answered 200, and was never reopened
        assert figures["streams_opened"] == figures["streams_2xx"] == clients, figures
        # counted by the gateway, and from the bytes h2load received: all of it, nothing more
        assert figures["gateway_deliveries"] == events * clients, figures
        assert figures["h2load_deliveries"] == events * clients, figures
        assert figures["h2load_data_bytes"] == figures["gateway_bytes_sent"], figures
        assert figures["all_delivered"] and row["all_delivered"], figures
        protocol, tls = wire[key]
        assert figures["application_protocol"] == protocol, figures
        assert figures["tls"].startswith("TLSv1.3") == tls, figures
        assert figures["cpu_us_per_delivery"]["nginx"] >= 0
    assert rows["h2-tls"]["connections"] < rows["h2-tls"]["clients"]
    assert rows["h2-tls-1"]["connections"] == rows["h2-tls-1"]["clients"]
    table = (tmp_path / "LB_PROTOCOLS.md").read_text()
    assert table.count(" (all) |") == 4, table
    assert "h2load --h1 -c 20 -m 1" in table
