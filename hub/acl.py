"""Least privilege in Redis: the ACL rules of the gateway's and the publisher's users.

    python -m hub.acl          prints the `ACL SETUSER` commands for HUB_KEY_PREFIX

The gateway reads streams and subscribes to channels, nothing else. The
publisher runs the publish script; Redis checks every command a script runs
against the caller's rights and cannot tie a user to one script, so the
publisher may run the script's commands (and only those) on the hub's keys.
"""

from __future__ import annotations

from hub.config import Settings

_CONNECT = ["+ping", "+hello", "+auth"]
# In a Redis Cluster: read the slot map, and follow a slot that is being migrated.
_CLUSTER = ["+cluster|slots", "+asking"]


def gateway_rules(prefix: str, mercure_subscriptions: bool = True) -> list[str]:
    rules = [
        "resetkeys",
        "resetchannels",
        "-@all",
        *_CONNECT,
        *_CLUSTER,
        f"%R~{prefix}stream:*",
        f"&{prefix}channel:*",
        "+xrange",
        "+xrevrange",
        "+get",  # a Mercure publisher's own ID for an update (see hub/mercure/record.py)
        "+time",  # the Mercure sequencer's barrier (see hub/mercure/sequencer.py)
        "+subscribe",
        "+unsubscribe",
        "+ssubscribe",
        "+sunsubscribe",
    ]
    if mercure_subscriptions:
        rules += mercure_presence_rules(prefix)
    return rules


def mercure_presence_rules(prefix: str) -> list[str]:
    """What a gateway needs to keep Mercure's active subscriptions (hub/mercure/presence.py).

    Its own registry under `{prefix}mercure:`, and publishing subscription events
    through the publish script, on Mercure's partitions only: a selector (Redis 7)
    grants the script's commands on those streams and channels alone, so the gateway
    still cannot write to, or announce on, any topic of the native API. (A partition
    is the topic `mercure <n>`; `?` stands for its space, which would split the rule.)
    """
    partitions = f"{prefix}stream:{{mercure?*"
    channels = f"{prefix}channel:{{mercure?*"
    script = ["+evalsha", "+eval", "+script|load", *_PUBLISH_SCRIPT_COMMANDS]
    return [
        f"~{prefix}mercure:*",
        "+hset",
        "+hdel",
        "+hvals",
        "+pexpire",
        "+zadd",
        "+zrangebyscore",
        "+zscore",
        "+zrem",
        "+set",
        "+del",
        f"(%RW~{partitions} &{channels} {' '.join(script)})",
    ]


# What the publish script (hub/publish.py) runs.
_PUBLISH_SCRIPT_COMMANDS = [
    "+xrevrange",
    "+xadd",
    "+xtrim",
    "+publish",
    "+spublish",
    "+time",
    "+set",
]


def publisher_rules(prefix: str) -> list[str]:
    return [
        "resetkeys",
        "resetchannels",
        "-@all",
        *_CONNECT,
        *_CLUSTER,
        f"~{prefix}stream:*",
        f"&{prefix}channel:*",
        "+evalsha",
        "+eval",
        "+script|load",
        "+wait",
        *_PUBLISH_SCRIPT_COMMANDS,
    ]


def setuser(name: str, password: str, rules: list[str]) -> list[str]:
    return ["ACL", "SETUSER", name, "reset", "on", f">{password}", *rules]


def main() -> None:
    settings = Settings.from_env()
    prefix = settings.key_prefix
    for name, rules in (
        ("hub-gateway", gateway_rules(prefix, settings.mercure_subscriptions == "on")),
        ("hub-publisher", publisher_rules(prefix)),
    ):
        # A selector holds spaces: quoted, as redis-cli reads it.
        print(
            " ".join(
                f'"{word}"' if " " in word else word for word in setuser(name, "<password>", rules)
            )
        )


if __name__ == "__main__":
    main()
