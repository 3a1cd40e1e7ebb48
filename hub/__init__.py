"""A Redis-backed fan-out broadcast hub for Server-Sent Events.

Follow one event, in five files: `hub/publish.py` appends it to its topic's
stream and announces it (a Lua script, on the primary that owns the topic);
`hub/subscription.py` hears the announcement in a gateway; `hub/fanout.py` frames
it once and hands the bytes to each client's `hub/client_connection.py`, which
writes them to the browser, whose `web/client.js` receives them. The README's
"Reading the code" names the modules around them.
"""
