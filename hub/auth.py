"""Who may subscribe to and publish on which topics: Mercure's access tokens, for both APIs.

One implementation of Mercure's token rules serves the native API too, so a
token means the same on `/events` and on `/.well-known/mercure`. Two forms are
read:

- the current one (`typ` `at+jwt`, RFC 9068): an `authorization_details` claim
  (RFC 9396) whose `mercure` entries name actions and topic matchers (`Exact`
  or `URLPattern`); `exp` is required, and any malformed entry voids the whole
  token, as partial acceptance would silently change what it allows;
- the older one, while `HUB_JWT_LEGACY_TOKENS` is on: a `mercure` claim with
  `publish` and `subscribe` topic selectors, which is what the hub's own tokens
  have always been (`user/42/*` is a glob: `*` is any run of characters).

Topics on the native API are public unless one of `HUB_PRIVATE_TOPICS` matches
them. A token comes, in the spec's order, from `Authorization: Bearer`, else
from the `access_token` (or older `authorization`) query parameter, else from
a cookie: exactly one place is read, so a weaker one cannot stand in for a
stronger one a request also carries.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt.algorithms import get_default_algorithms

from hub.config import ConfigError, Settings
from hub.mercure.matchers import (
    EXACT,
    GLOB,
    URL_PATTERN,
    WILDCARD,
    InvalidMatcher,
    InvalidTopic,
    Matcher,
    TopicFilter,
    check_topic,
    compile_matcher,
    selector,
)

NUMERIC_CLAIMS = ("exp", "nbf", "iat")
INVALID_TOKEN = "invalid_token"
INSUFFICIENT_SCOPE = "insufficient_scope"

ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")
LEGACY_TOKEN_TYPES = ("jwt", "application/jwt")
# Query parameters and cookies a token may come in: the current name, then the older one.
QUERY_NAMES = ("access_token", "authorization")
ACCESS_TOKEN_COOKIE = "mercureAccessToken"

MERCURE_DETAIL = "mercure"
ACTIONS = frozenset({"publish", "subscribe"})
DETAIL_MATCH_TYPES = (EXACT, URL_PATTERN)
MAX_MERCURE_DETAILS = 32
MAX_DETAIL_TOPICS = 256


class Unauthorized(Exception):
    """No valid token (401).

    `error` is RFC 6750's code: None when no token was presented (the bare
    challenge), `invalid_token` for any presented token that failed.
    """

    def __init__(self, reason: str, error: str | None = None) -> None:
        super().__init__(reason)
        self.error = error


class Forbidden(Exception):
    """A valid token that does not cover what was asked (403)."""

    error = INSUFFICIENT_SCOPE


def challenge(exc: Unauthorized | Forbidden, resource_metadata: str | None = None) -> str:
    """The `WWW-Authenticate` value answering `exc` (RFC 6750, RFC 9728)."""
    params = []
    if exc.error is not None:
        params.append(f"error={_quoted(exc.error)}")
    if resource_metadata is not None:
        params.append(f"resource_metadata={_quoted(resource_metadata)}")
    return "Bearer " + ", ".join(params) if params else "Bearer"


@dataclass(frozen=True)
class Grant:
    """What a verified token allows, and until when (seconds since the epoch, or None).

    `payloads` pairs each topic matcher of a subscribe entry carrying a
    payload with that payload, in the token's order.
    """

    subscribe: tuple[Matcher, ...]
    publish: tuple[Matcher, ...]
    expires: float | None
    subject: str | None = None
    payloads: tuple[tuple[Matcher, object], ...] = ()

    def can_subscribe(self, topic: str) -> bool:
        return any(matcher.matches(topic) for matcher in self.subscribe)

    def can_publish(self, topic: str) -> bool:
        return any(matcher.matches(topic) for matcher in self.publish)

    def payload_for(self, match: str) -> object | None:
        """The payload of a subscription whose matcher string is `match`.

        The spec matches the subscription's own matcher string as if it were a
        topic, and the first entry that matches wins.
        """
        for matcher, payload in self.payloads:
            if matcher.matches(match):
                return payload
        return None


class Authority:
    def __init__(self, settings: Settings) -> None:
        self.base_url = settings.public_url
        self.audience = settings.jwt_audience
        self.issuers = frozenset(settings.jwt_issuers)
        self.legacy = settings.jwt_legacy_tokens == "on"
        self.max_topic_bytes = settings.mercure_max_topic_bytes
        self.cookies = tuple(dict.fromkeys((ACCESS_TOKEN_COOKIE, settings.jwt_cookie)))
        self.private = TopicFilter(
            [compile_matcher(GLOB, pattern, self.base_url) for pattern in settings.private_topics]
        )
        self.keys, self.unusable = _verification_keys(
            _load_key(settings.jwt_key), settings.jwt_algorithms
        )

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def is_private(self, topic: str) -> bool:
        return self.private.matches(topic)

    def token_of(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], query: Mapping[str, str]
    ) -> str | None:
        """The request's token, from the first place that has one in the spec's order.

        A place is chosen by its presence, not by its holding a usable token: an
        `Authorization` header of another scheme, or an empty `access_token`, means
        no token rather than falling back to a cookie, which the browser adds to
        any site's request.
        """
        authorization = headers.get("authorization")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
        for places, names in ((query, QUERY_NAMES), (cookies, self.cookies)):
            for name in names:
                if name in places:
                    return places[name].strip() or None
        return None

    def grant_of(self, token: str | None) -> Grant | None:
        """The grant of a token, None when there is none; `Unauthorized` for a bad one."""
        return None if token is None else self.verify(token)

    def verify(self, token: str | None) -> Grant:
        """The grant of a valid token; `Unauthorized`, with the reason, for anything else."""
        if not self.keys:
            presented = None if token is None else INVALID_TOKEN
            raise Unauthorized("tokens are not accepted here: set HUB_JWT_KEY", presented)
        if token is None:
            raise Unauthorized("a token is required: send Authorization: Bearer <JWT>")
        try:
            return self._grant(token)
        except _Invalid as exc:
            raise Unauthorized(f"the token is not valid: {exc}", INVALID_TOKEN) from None
        except _Expired:
            raise Unauthorized("the token has expired", INVALID_TOKEN) from None

    def check_subscribe(self, topics: Iterable[str], token: str | None) -> Grant | None:
        """The grant that lets these topics be read (None when they are all public)."""
        private = [topic for topic in topics if self.is_private(topic)]
        if not private:
            return None
        grant = self.verify(token)
        refused = [topic for topic in private if not grant.can_subscribe(topic)]
        if refused:
            raise Forbidden(f"the token does not allow subscribing to {', '.join(refused)}")
        return grant

    def check_publish(self, topic: str, grant: Grant) -> None:
        if not grant.can_publish(topic):
            raise Forbidden(f"the token does not allow publishing to {topic}")

    def _grant(self, token: str) -> Grant:
        header, claims = self._decode(token)
        for claim in NUMERIC_CLAIMS:
            value = claims.get(claim)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise _Invalid(f"its {claim!r} claim must be a number")
        kind = header.get("typ")
        current = isinstance(kind, str) and kind.lower() in ACCESS_TOKEN_TYPES
        if not current:
            if not self.legacy:
                raise _Invalid("its type ('typ') must be at+jwt")
            if kind is not None and not (
                isinstance(kind, str) and kind.lower() in LEGACY_TOKEN_TYPES
            ):
                raise _Invalid(f"its type ('typ') {str(kind)[:20]!r} is not at+jwt or JWT")
            if "authorization_details" in claims:
                raise _Invalid("a token with authorization_details must have the type at+jwt")
        self._check_times(claims, exp_required=current)
        self._check_audience_and_issuer(claims)
        exp = claims.get("exp")
        subject = claims.get("sub")
        grant = (
            self._details_grant(claims.get("authorization_details"))
            if current
            else self._legacy_grant(claims.get("mercure"))
        )
        return Grant(
            grant.subscribe,
            grant.publish,
            float(exp) if exp is not None else None,
            subject if isinstance(subject, str) else None,
            grant.payloads,
        )

    def _decode(self, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The header and claims of a token signed with our key by an allowed algorithm."""
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            if not isinstance(algorithm, str) or algorithm not in self.keys:
                raise _Invalid(
                    f"its algorithm {str(algorithm)[:20]!r} is not one of {', '.join(self.keys)}"
                )
            # Times, audience and issuer are checked here, after the claims' types are.
            decoded = jwt.decode_complete(
                token,
                self.keys[algorithm],
                algorithms=[algorithm],
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            # PyJWTError covers more than InvalidTokenError (a key of the wrong type, for
            # one); the others come from the cryptography underneath, on hostile input.
            raise _Invalid(str(exc)) from None
        return decoded["header"], decoded["payload"]

    def _check_times(self, claims: Mapping[str, Any], exp_required: bool) -> None:
        now = time.time()
        exp = claims.get("exp")
        if exp is None:
            if exp_required:
                raise _Invalid("it has no expiry ('exp'), which an at+jwt token must have")
        elif exp <= now:
            raise _Expired
        nbf = claims.get("nbf")
        if nbf is not None and nbf > now:
            raise _Invalid("it is not valid yet ('nbf')")

    def _check_audience_and_issuer(self, claims: Mapping[str, Any]) -> None:
        if self.audience:
            audience = claims.get("aud")
            named = audience == self.audience or (
                isinstance(audience, list) and self.audience in audience
            )
            if not named:
                raise _Invalid(f"its audience ('aud') does not name {self.audience}")
        issuer = claims.get("iss")
        if self.issuers and not (isinstance(issuer, str) and issuer in self.issuers):
            raise _Invalid("its issuer ('iss') is not one of HUB_JWT_ISSUERS")

    def _details_grant(self, details: object) -> Grant:
        """What the `mercure` authorization details allow; `_Invalid` if any is malformed."""
        if details is None:
            return Grant((), (), None)
        if not isinstance(details, list):
            raise _Invalid("authorization_details must be an array")
        subscribe: list[Matcher] = []
        publish: list[Matcher] = []
        payloads: list[tuple[Matcher, object]] = []
        count = 0
        for index, detail in enumerate(details):
            where = f"authorization_details[{index}]"
            if not isinstance(detail, dict) or not isinstance(detail.get("type"), str):
                raise _Invalid(f"{where} must be an object with a type")
            if detail["type"] != MERCURE_DETAIL:
                continue  # another resource's details: not ours to judge
            count += 1
            if count > MAX_MERCURE_DETAILS:
                raise _Invalid(f"it has more than {MAX_MERCURE_DETAILS} mercure details")
            actions = detail.get("actions")
            if (
                not isinstance(actions, list)
                or not actions
                or not all(isinstance(a, str) and a in ACTIONS for a in actions)
            ):
                raise _Invalid(f"{where}.actions must be a non-empty array of publish, subscribe")
            matchers = self._detail_topics(detail.get("topics"), where)
            payload = detail.get("payload")
            if "payload" in detail and not isinstance(payload, dict):
                raise _Invalid(f"{where}.payload must be an object")
            if "subscribe" in actions:
                subscribe.extend(matchers)
                if payload is not None:
                    payloads.extend((matcher, payload) for matcher in matchers)
            if "publish" in actions:
                publish.extend(matchers)
        return Grant(tuple(subscribe), tuple(publish), None, None, tuple(payloads))

    def _detail_topics(self, topics: object, where: str) -> list[Matcher]:
        if not isinstance(topics, list) or not topics:
            raise _Invalid(f"{where}.topics must be a non-empty array")
        if len(topics) > MAX_DETAIL_TOPICS:
            raise _Invalid(f"{where}.topics has more than {MAX_DETAIL_TOPICS} entries")
        matchers = []
        for index, topic in enumerate(topics):
            entry = f"{where}.topics[{index}]"
            if not isinstance(topic, dict):
                raise _Invalid(f"{entry} must be an object")
            match = topic.get("match")
            match_type = topic.get("matchType", EXACT)
            if not isinstance(match, str):
                raise _Invalid(f"{entry}.match must be a string")
            if match_type not in DETAIL_MATCH_TYPES:
                raise _Invalid(f"{entry}.matchType must be Exact or URLPattern")
            try:
                check_topic(match, self.max_topic_bytes)
                matchers.append(compile_matcher(match_type, match, self.base_url))
            except (InvalidTopic, InvalidMatcher) as exc:
                raise _Invalid(f"{entry}: {exc}") from None
        return matchers

    def _legacy_grant(self, mercure: object) -> Grant:
        """What the older `mercure` claim allows: its selectors, and one payload for all."""
        if not isinstance(mercure, dict):
            return Grant((), (), None)
        try:
            subscribe = tuple(
                selector(s, self.base_url) for s in _strings(mercure.get("subscribe"))
            )
            publish = tuple(selector(s, self.base_url) for s in _strings(mercure.get("publish")))
        except InvalidMatcher as exc:
            raise _Invalid(f"a mercure selector is not valid: {exc}") from None
        payload = mercure.get("payload")
        payloads = () if payload is None else ((Matcher(EXACT, WILDCARD), payload),)
        return Grant(subscribe, publish, None, None, payloads)


class _Invalid(Exception):
    """A presented token failed; the message says how, after "the token is not valid: "."""


class _Expired(Exception):
    """A presented token is past its `exp`."""


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


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
