"""Who may subscribe to and publish on which topics: JWTs in Mercure's shape.

A token's claims hold `{"mercure": {"subscribe": [...], "publish": [...]}}`,
lists of topic patterns, so a token minted for a Mercure hub works here. In a
pattern `*` stands for any run of characters (`/` included): `user/42/*`
covers `user/42/inbox`, and `*` alone covers every topic.

Topics are public unless one of `HUB_PRIVATE_TOPICS` matches them; a private
topic needs a token whose `subscribe` patterns cover it. A token is read from
`Authorization: Bearer`, else from a cookie (`EventSource` with credentials),
else from the `authorization` query parameter, the least safe: URLs end up in
logs and browser history.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jwt
from jwt.algorithms import get_default_algorithms

from hub.config import ConfigError, Settings

NUMERIC_CLAIMS = ("exp", "nbf", "iat")


class Unauthorized(Exception):
    """No valid token (401)."""


class Forbidden(Exception):
    """A valid token that does not cover what was asked (403)."""


@lru_cache(maxsize=1024)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


def covers(patterns: Iterable[str], topic: str) -> bool:
    return any(_pattern(pattern).match(topic) for pattern in patterns)


@dataclass(frozen=True)
class Grant:
    """What a verified token allows, and until when (seconds since the epoch, or None)."""

    subscribe: tuple[str, ...]
    publish: tuple[str, ...]
    expires: float | None


class Authority:
    def __init__(self, settings: Settings) -> None:
        self.private = settings.private_topics
        self.cookie = settings.jwt_cookie
        self.keys, self.unusable = _verification_keys(
            _load_key(settings.jwt_key), settings.jwt_algorithms
        )

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def is_private(self, topic: str) -> bool:
        return covers(self.private, topic)

    def token_of(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], query: Mapping[str, str]
    ) -> str | None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return cookies.get(self.cookie) or query.get("authorization") or None

    def verify(self, token: str | None) -> Grant:
        """The grant of a valid token; `Unauthorized`, with the reason, for anything else."""
        if not self.keys:
            raise Unauthorized("tokens are not accepted here: set HUB_JWT_KEY")
        if token is None:
            raise Unauthorized("a token is required: send Authorization: Bearer <JWT>")
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            if not isinstance(algorithm, str) or algorithm not in self.keys:
                raise Unauthorized(
                    f"the token is not valid: its algorithm {str(algorithm)[:20]!r} is not "
                    f"one of {', '.join(self.keys)}"
                )
            key = self.keys[algorithm]
            claims = jwt.decode(token, key, algorithms=[algorithm], options={"verify_aud": False})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            # PyJWTError covers more than InvalidTokenError (a key of the wrong type, for
            # one); the others come from the cryptography underneath, on hostile input.
            raise Unauthorized(f"the token is not valid: {exc}") from None
        for claim in NUMERIC_CLAIMS:
            value = claims.get(claim)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise Unauthorized(f"the token is not valid: its {claim!r} claim must be a number")
        mercure = claims.get("mercure")
        if not isinstance(mercure, dict):
            mercure = {}
        exp = claims.get("exp")
        return Grant(
            _patterns(mercure.get("subscribe")),
            _patterns(mercure.get("publish")),
            float(exp) if exp is not None else None,
        )

    def check_subscribe(self, topics: Iterable[str], token: str | None) -> Grant | None:
        """The grant that lets these topics be read (None when they are all public)."""
        private = [topic for topic in topics if self.is_private(topic)]
        if not private:
            return None
        grant = self.verify(token)
        refused = [topic for topic in private if not covers(grant.subscribe, topic)]
        if refused:
            raise Forbidden(f"the token does not allow subscribing to {', '.join(refused)}")
        return grant

    def check_publish(self, topic: str, grant: Grant) -> None:
        if not covers(grant.publish, topic):
            raise Forbidden(f"the token does not allow publishing to {topic}")


def _patterns(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()


def _verification_keys(key: str, algorithms: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """The key, prepared once for each listed algorithm it can verify; those it cannot.

    A secret serves the HS algorithms, an RSA public key RS and PS, an EC key
    ES: a token of any other algorithm is refused before its signature is
    looked at, so no key is ever used with an algorithm of another kind.
    """
    if not key:
        return {}, []
    known = get_default_algorithms()
    keys: dict[str, Any] = {}
    unusable = []
    for name in algorithms:
        if name not in known or name.lower() == "none":
            raise ConfigError(f"HUB_JWT_ALGORITHMS: unknown algorithm {name!r}")
        try:
            keys[name] = known[name].prepare_key(key)
        except (jwt.PyJWTError, ValueError, TypeError):
            unusable.append(name)
    if not keys:
        raise ConfigError(
            f"HUB_JWT_KEY cannot verify any of HUB_JWT_ALGORITHMS ({', '.join(algorithms)})"
        )
    return keys, unusable


def _load_key(value: str) -> str:
    """The key as given (a secret or a PEM), or the contents of the file it names."""
    if value and not value.startswith("-----BEGIN") and Path(value).is_file():
        return Path(value).read_text()
    return value
