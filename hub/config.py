"""Every setting of the hub, read from environment variables in one place.

The gateway, the publisher library and the CLI all take a `Settings`; nothing
else in the project reads the environment. `SETTINGS_HELP` is the table the
README shows, so the documentation and the defaults cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """A setting has a value the hub cannot use."""


def _setting(env: str, default: Any, help: str) -> Any:
    return field(default=default, metadata={"env": env, "help": help})


@dataclass(frozen=True)
class Settings:
    redis_url: str = _setting(
        "HUB_REDIS_URL",
        "",
        "Redis to use: one server (`redis://host:6379`, `rediss://`, `unix://`), a Sentinel "
        "service (`redis+sentinel://s1:26379,s2:26379/service`) or a Cluster "
        "(`redis+cluster://n1:6379,n2:6379`). Empty: the gateway starts an embedded "
        "development server; the publisher uses redis://127.0.0.1:6379.",
    )
    publish_wait_replicas: int = _setting(
        "HUB_PUBLISH_WAIT_REPLICAS",
        0,
        "Replicas that must hold an event (`WAIT`) before a publish is acknowledged; with 1 "
        "or more, an acknowledged event survives the failover of its primary.",
    )
    publish_wait_ms: int = _setting(
        "HUB_PUBLISH_WAIT_MS",
        1000,
        "How long a publish waits for those replicas before it fails (the event may still "
        "be delivered).",
    )
    host: str = _setting("HUB_HOST", "127.0.0.1", "Address the gateway listens on.")
    port: int = _setting("HUB_PORT", 8000, "Port the gateway listens on.")
    key_prefix: str = _setting(
        "HUB_KEY_PREFIX", "sse:", "Prefix of every Redis key and channel the hub uses."
    )
    retention_maxlen: int = _setting(
        "HUB_RETENTION_MAXLEN",
        10_000,
        "Events kept per topic for replay (approximate `MAXLEN`; 0 keeps all).",
    )
    retention_seconds: int = _setting(
        "HUB_RETENTION_SECONDS",
        0,
        "Age bound of a topic's history in seconds (approximate `MINID`; 0 is no bound).",
    )
    max_event_bytes: int = _setting(
        "HUB_MAX_EVENT_BYTES", 1_048_576, "Largest event data accepted, in bytes (UTF-8)."
    )
    max_batch_events: int = _setting(
        "HUB_MAX_BATCH_EVENTS",
        1000,
        "Most events in one batch `POST /publish` (a JSON array, or NDJSON); a larger batch is "
        "refused whole (413). Each event it may hold adds 16 to the arrays, objects and "
        "members that `HUB_MAX_JSON_VALUES` allows a batch.",
    )
    max_batch_bytes: int = _setting(
        "HUB_MAX_BATCH_BYTES",
        16_777_216,
        "Largest body of a batch `POST /publish`, in bytes (413); each event in it is still "
        "held to `HUB_MAX_EVENT_BYTES`.",
    )
    heartbeat_seconds: float = _setting(
        "HUB_HEARTBEAT_SECONDS",
        15.0,
        "Interval of heartbeat comments on idle streams (a stream sent nothing for one "
        "interval gets one within the next).",
    )
    retry_ms: int = _setting(
        "HUB_RETRY_MS", 3000, "Reconnection delay hint (`retry:`) sent to browsers."
    )
    client_buffer_bytes: int = _setting(
        "HUB_CLIENT_BUFFER_BYTES",
        1_048_576,
        "Unsent bytes a client may fall behind by before it is disconnected "
        "(it resumes from the stream when it reconnects).",
    )
    client_stall_seconds: float = _setting(
        "HUB_CLIENT_STALL_SECONDS",
        20.0,
        "A client whose socket accepts nothing for this long is disconnected and its "
        "connection aborted (it resumes from the stream when it reconnects).",
    )
    max_topics: int = _setting("HUB_MAX_TOPICS", 32, "Topics one connection may subscribe to.")
    cors_origins: tuple[str, ...] = _setting(
        "HUB_CORS_ORIGINS",
        (),
        "Comma-separated origins allowed to connect from other sites (`*` for any).",
    )
    publish_token: str = _setting(
        "HUB_PUBLISH_TOKEN",
        "",
        "A fixed bearer token that may publish on any topic through `POST /publish` "
        "(for setups without JWTs). With neither this nor `HUB_JWT_KEY`, the endpoint is off.",
    )
    jwt_key: str = _setting(
        "HUB_JWT_KEY",
        "",
        "Key that verifies JWTs: the HS256 secret, or a PEM public key (or its file): RSA "
        "for RS256/PS256, EC for ES256.",
    )
    jwt_algorithms: tuple[str, ...] = _setting(
        "HUB_JWT_ALGORITHMS",
        ("HS256",),
        "Comma-separated JWT algorithms accepted; those the key cannot verify are refused "
        "(with a warning at start).",
    )
    jwt_cookie: str = _setting(
        "HUB_JWT_COOKIE", "mercureAuthorization", "Cookie a browser's token may come in."
    )
    private_topics: tuple[str, ...] = _setting(
        "HUB_PRIVATE_TOPICS",
        (),
        "Comma-separated topic patterns (`*` is any run of characters) that need a token "
        "to subscribe; other topics are public.",
    )
    jwt_audience: str = _setting(
        "HUB_JWT_AUDIENCE",
        "",
        "The hub's resource identifier: when set, a token's `aud` must name it (Mercure's "
        "current tokens must carry it; set it to the hub's public URL).",
    )
    jwt_issuers: tuple[str, ...] = _setting(
        "HUB_JWT_ISSUERS",
        (),
        "Comma-separated issuers (`iss`) a token may come from; empty: any issuer.",
    )
    jwt_legacy_tokens: str = _setting(
        "HUB_JWT_LEGACY_TOKENS",
        "on",
        "`on` also accepts tokens in the older Mercure form: a `mercure` claim with "
        "`publish`/`subscribe` topic selectors, `typ` JWT, `exp` optional. `off`: only "
        "`at+jwt` tokens with `authorization_details`.",
    )
    public_url: str = _setting(
        "HUB_PUBLIC_URL",
        "http://localhost/",
        "The URL browsers reach the hub at; relative Mercure topics and URL patterns are "
        "resolved against it.",
    )
    mercure_partitions: int = _setting(
        "HUB_MERCURE_PARTITIONS",
        16,
        "Streams Mercure updates are spread over (by topic); fixed for a deployment's life: "
        "cursors name their partition.",
    )
    mercure_anonymous: str = _setting(
        "HUB_MERCURE_ANONYMOUS",
        "on",
        "`on` lets subscribers without a token receive public Mercure updates; `off` "
        "requires a token (401).",
    )
    mercure_max_matchers: int = _setting(
        "HUB_MERCURE_MAX_MATCHERS", 32, "Topic matchers one Mercure subscription may hold (400)."
    )
    mercure_max_topic_bytes: int = _setting(
        "HUB_MERCURE_MAX_TOPIC_BYTES",
        1024,
        "Longest topic, matcher or publisher-chosen ID, in bytes (400 for a matcher, 413 "
        "for a published field).",
    )
    mercure_subscriptions: str = _setting(
        "HUB_MERCURE_SUBSCRIPTIONS",
        "on",
        "`on` publishes Mercure subscription events and serves the subscriptions API.",
    )
    max_url_bytes: int = _setting("HUB_MAX_URL_BYTES", 8192, "Longest request target accepted.")
    max_header_bytes: int = _setting(
        "HUB_MAX_HEADER_BYTES", 16384, "Largest total of request header names and values."
    )
    max_streams_per_client: int = _setting(
        "HUB_MAX_STREAMS_PER_CLIENT",
        0,
        "Open streams (and publish requests) one client address may hold at once (0: no limit).",
    )
    trusted_proxies: tuple[str, ...] = _setting(
        "HUB_TRUSTED_PROXIES",
        (),
        "Comma-separated addresses or networks (`10.0.0.0/8`) of proxies whose "
        "`X-Forwarded-For` names the client; `*` trusts every peer. Empty: the header is "
        "ignored and the peer's address is the client's.",
    )
    request_header_seconds: float = _setting(
        "HUB_REQUEST_HEADER_SECONDS",
        10.0,
        "Deadline for a request's line and headers, from the connection's start or the "
        "request's first byte (408, then the connection is closed).",
    )
    request_body_seconds: float = _setting(
        "HUB_REQUEST_BODY_SECONDS",
        30.0,
        "Deadline for a request's body once its headers are in (408).",
    )
    max_json_depth: int = _setting(
        "HUB_MAX_JSON_DEPTH", 32, "Deepest nesting of arrays and objects in a JSON body (400)."
    )
    max_json_values: int = _setting(
        "HUB_MAX_JSON_VALUES",
        10_000,
        "Most arrays, objects and members in a JSON body, counted before it is parsed "
        "(413); larger structures can be sent as a string.",
    )
    shutdown_seconds: float = _setting(
        "HUB_SHUTDOWN_SECONDS",
        10.0,
        "On SIGTERM, the longest the gateway waits for streams to end before it exits.",
    )
    replay_page: int = _setting(
        "HUB_REPLAY_PAGE", 1000, "Stream entries read per history read when replaying."
    )
    redis_timeout_seconds: float = _setting(
        "HUB_REDIS_TIMEOUT_SECONDS",
        5.0,
        "Deadline of a Redis call, and of the subscription's health check.",
    )
    log_format: str = _setting("HUB_LOG_FORMAT", "text", "`text` or `json` log lines.")
    workers: int = _setting(
        "HUB_WORKERS",
        1,
        "Gateway processes sharing the port (SO_REUSEPORT); about one per core.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None or (raw == "" and f.type != "str"):
                continue
            values[f.name] = _parse(f.metadata["env"], str(f.type), raw)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        positive = {
            "HUB_PORT": self.port,
            "HUB_MAX_EVENT_BYTES": self.max_event_bytes,
            "HUB_MAX_BATCH_EVENTS": self.max_batch_events,
            "HUB_MAX_BATCH_BYTES": self.max_batch_bytes,
            "HUB_HEARTBEAT_SECONDS": self.heartbeat_seconds,
            "HUB_CLIENT_BUFFER_BYTES": self.client_buffer_bytes,
            "HUB_MAX_TOPICS": self.max_topics,
            "HUB_REPLAY_PAGE": self.replay_page,
            "HUB_REDIS_TIMEOUT_SECONDS": self.redis_timeout_seconds,
            "HUB_WORKERS": self.workers,
            "HUB_MAX_URL_BYTES": self.max_url_bytes,
            "HUB_MAX_HEADER_BYTES": self.max_header_bytes,
            "HUB_PUBLISH_WAIT_MS": self.publish_wait_ms,
            "HUB_CLIENT_STALL_SECONDS": self.client_stall_seconds,
            "HUB_REQUEST_HEADER_SECONDS": self.request_header_seconds,
            "HUB_REQUEST_BODY_SECONDS": self.request_body_seconds,
            "HUB_MAX_JSON_DEPTH": self.max_json_depth,
            "HUB_MAX_JSON_VALUES": self.max_json_values,
            "HUB_MERCURE_PARTITIONS": self.mercure_partitions,
            "HUB_MERCURE_MAX_MATCHERS": self.mercure_max_matchers,
            "HUB_MERCURE_MAX_TOPIC_BYTES": self.mercure_max_topic_bytes,
        }
        for env, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{env} must be positive, got {value}")
        if (
            min(
                self.retention_maxlen,
                self.retention_seconds,
                self.max_streams_per_client,
                self.publish_wait_replicas,
            )
            < 0
        ):
            raise ConfigError(
                "retention, stream limits and replicas to wait for cannot be negative"
            )
        if self.private_topics and not self.jwt_key:
            raise ConfigError("HUB_PRIVATE_TOPICS needs HUB_JWT_KEY to verify subscribers' tokens")
        for proxy in self.trusted_proxies:
            if proxy != "*":
                try:
                    ipaddress.ip_network(proxy, strict=False)
                except ValueError:
                    raise ConfigError(
                        f"HUB_TRUSTED_PROXIES: {proxy!r} is not an address or a network"
                    ) from None
        for env, switch in (
            ("HUB_JWT_LEGACY_TOKENS", self.jwt_legacy_tokens),
            ("HUB_MERCURE_ANONYMOUS", self.mercure_anonymous),
            ("HUB_MERCURE_SUBSCRIPTIONS", self.mercure_subscriptions),
        ):
            if switch not in ("on", "off"):
                raise ConfigError(f"{env} must be on or off, got {switch!r}")
        if not self.public_url.startswith(("http://", "https://")):
            raise ConfigError(f"HUB_PUBLIC_URL must be an http(s) URL, got {self.public_url!r}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"HUB_LOG_FORMAT must be text or json, got {self.log_format!r}")


def _parse(env: str, kind: str, raw: str) -> Any:
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "tuple[str, ...]":
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        return raw
    except ValueError:
        raise ConfigError(f"{env} must be a {kind}, got {raw!r}") from None


def settings_table() -> str:
    """The configuration table, in Markdown, as the README shows it."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for f in fields(Settings):
        default = f.default
        shown = ",".join(default) if isinstance(default, tuple) else str(default)
        rows.append(f"| `{f.metadata['env']}` | `{shown}` | {f.metadata['help']} |")
    return "\n".join(rows)
