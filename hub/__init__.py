"""A Redis-backed fan-out broadcast hub for Server-Sent Events.

Follow one event: `publisher/client.py` runs `hub/publish.lua` on the Redis
primary that `hub/topology.py` names for its topic (through `hub/primaries.py`);
the gateway's `hub/subscription.py` hears it on that primary, `hub/fanout.py` frames it once (`hub/sse.py`)
and hands the bytes to every client connection (`hub/client_connection.py`), which
`hub/app.py` serves; `hub/history.py` reads what a reconnecting client missed, and
`hub/gateway.py` holds one process together.
"""
