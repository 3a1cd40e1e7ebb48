"""The Mercure protocol, served beside the hub's own API on the same gateways and Redis.

Read in order: `matchers` (which topics a subscription selects), `record` (how an
update is kept: partitions of streams, IDs that are cursors), `sequencer` (one
hub-wide order over the partitions), `dispatch` (which streams get an update),
`subscribe` and `publish` (the HTTP endpoints, routed by `endpoint`), `gateway`
(Mercure's part of a gateway process), `presence` and `subscriptions_api` (active
subscriptions, and the API that lists them), `discovery` (the hub's metadata).
"""
