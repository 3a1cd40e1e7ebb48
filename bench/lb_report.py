"""The table of the load-balancer protocol comparison (bench/lb_protocols.py), for RESULTS.md
and for its own LB_PROTOCOLS.md."""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]

LB_TITLE = "nginx in front: TLS and HTTP/2"

LB_INTRO = [
    "What the load balancer pays per delivered event for each client protocol, in a broadcast "
    "(every client on one topic). One gateway for the run, behind nginx with the deployment's "
    "configuration (`deploy/nginx.conf.template`: one worker, `proxy_buffering off`, HTTP/1.1 to "
    "the gateway) plus its TLS listener with HTTP/2 on (`listen … ssl http2`, with the "
    "ECDSA P-256 development certificate of `hub/devcert.py`), nginx started fresh for each "
    "measurement. The "
    "clients are h2load's (`nghttp2-client`) streams on `GET /events?topic=b0`: `--h1` with one "
    "connection per client for HTTP/1.1; for HTTP/2, `-c connections -m streams`. Once every "
    "stream is open, events are published into Redis at a fixed rate. **CPU** is utime + stime "
    "of nginx's worker (and of the gateway) from /proc, from the first publish until every event "
    "has gone through (the gateway handed each to every stream, and no socket between it and "
    "h2load holds a byte), over **deliveries** = events × clients, counted twice: by the "
    "gateway (frames handed out) and from h2load's response bytes against the exact frames "
    "published (*all*: both agree with events × clients, byte for byte, in every round).",
    "",
    "CPU per delivery moves with what else the machine does (this one is shared), by as much "
    "as the gaps between protocols. So the protocols take turns, round after round (each round "
    "starting one further on); each figure is the median of its rounds, with the lowest and "
    "highest, and each *× HTTP/1.1* the median of each round's ratio to the plain HTTP/1.1 "
    "measurement of the same round. The gateway always speaks HTTP/1.1 to nginx, one "
    "connection per stream, whatever the clients speak: the same work in every protocol, so "
    "its spread is the noise, and nginx's CPU as a share of the gateway's in the same window "
    "(the second ratio) cancels much of it. *nginx KB / client*: the worker's resident memory "
    "with every stream open, less before, per client.",
]


def _f(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _deliveries(r: Row) -> str:
    rounds = len(r["rounds"])
    each = f" × {rounds} rounds" if rounds > 1 else ""
    if r["all_delivered"]:
        return f"{r['deliveries']:,} (all){each}"
    return f"{r['deliveries']:,} of {r['expected_deliveries']:,} (fewest){each}"


def _with_range(r: Row, key: str) -> str:
    per, spread = r["cpu_us_per_delivery"], r.get(f"{key}_us_range")
    if not per:
        return "–"
    if spread and len(r["rounds"]) > 1:
        return f"{_f(per[key])} ({_f(spread[0])}–{_f(spread[1])})"
    return _f(per[key])


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def lb_rows(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.get("kind") == "lb"]


def lb_table(rows: list[Row]) -> list[str]:
    lines = [
        "| Protocol | Clients | Connections × streams | Events | Deliveries "
        "| nginx µs / delivery (range) | × HTTP/1.1 | gateway µs / delivery (range) "
        "| × HTTP/1.1, as a share of the gateway's CPU | nginx cores busy | nginx KB / client |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in lb_rows(rows):
        if "error" in r:
            lines.append(f"| {r['protocol']} | error: {r['error']} |" + " |" * 9)
            continue
        protocol = r["protocol"] + (f" ({r['tls']})" if r["tls"] else "")
        lines.append(
            f"| {protocol} | {r['clients']:,} | {r['connections']:,} × "
            f"{r['streams_per_connection']} | {r['events']:,} | {_deliveries(r)} "
            f"| {_with_range(r, 'nginx')} | {_ratio(r.get('nginx_ratio_vs_h1'))} "
            f"| {_with_range(r, 'gateway')} | {_ratio(r.get('normalized_ratio_vs_h1'))} "
            f"| {_f(r['cores']['nginx'])} | {_f(r['nginx_rss_kb_per_client'], 1)} |"
        )
    return lines


def lb_commands(rows: list[Row]) -> list[str]:
    """The h2load command line of each protocol (its port is the run's)."""
    return [f"- `{r['h2load_command']}`" for r in lb_rows(rows) if "h2load_command" in r]


def lb_section(rows: list[Row]) -> list[str]:
    """The RESULTS.md section (no lines if the run had no such rows)."""
    if not lb_rows(rows):
        return []
    return [
        f"## {LB_TITLE}",
        "",
        *LB_INTRO,
        "",
        *lb_table(rows),
        "",
        "h2load ran as:",
        "",
        *lb_commands(rows),
        "",
    ]


def lb_markdown(rows: list[Row], meta: dict[str, Any]) -> str:
    """LB_PROTOCOLS.md of a run of bench/lb_protocols.py on its own."""
    m, v = meta["machine"], meta["versions"]
    head = [
        f"# {LB_TITLE}",
        "",
        f"Produced by `{meta['command']}` ({meta['started']} – {meta['finished']}, "
        f"{meta['wall_min']:.1f} min) on {m['nproc']} cores ({m['cpu']}), {m['os']}, "
        f"Linux {m['kernel']}; load average {meta['load_start']} at the start, "
        f"{meta['load_end']} at the end.",
        "",
        "**Versions:** " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
    ]
    return "\n".join(head + lb_section(rows)[2:])
