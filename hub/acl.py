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


def gateway_rules(prefix: str) -> list[str]:
    return [
        "resetkeys",
        "resetchannels",
        "-@all",
        *_CONNECT,
        *_CLUSTER,
        f"%R~{prefix}stream:*",
        f"&{prefix}channel:*",
        "+xrange",
        "+xrevrange",
        "+subscribe",
        "+unsubscribe",
        "+ssubscribe",
        "+sunsubscribe",
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
        # What the publish script (hub/publish.py) runs:
        "+xrevrange",
        "+xadd",
        "+xtrim",
        "+publish",
        "+spublish",
        "+time",
    ]


def setuser(name: str, password: str, rules: list[str]) -> list[str]:
    return ["ACL", "SETUSER", name, "reset", "on", f">{password}", *rules]


def main() -> None:
    prefix = Settings.from_env().key_prefix
    for name, rules in (
        ("hub-gateway", gateway_rules(prefix)),
        ("hub-publisher", publisher_rules(prefix)),
    ):
        print(" ".join(setuser(name, "<password>", rules)))


if __name__ == "__main__":
    main()
