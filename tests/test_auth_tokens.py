"""Mercure's token rules, as both APIs apply them: which tokens are valid, and what they allow."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import jwt
import pytest

from hub.auth import Authority, Forbidden, Grant, Unauthorized, challenge
from hub.config import Settings

SECRET = "a-test-secret-of-at-least-32-bytes!"
HUB = "https://hub.example/"
BOOKS = "https://example.com/books/"


def authority(**settings: Any) -> Authority:
    return Authority(Settings(jwt_key=SECRET, public_url=HUB, **settings))


def sign(claims: Mapping[str, Any], typ: str | None = "at+jwt", ttl: float | None = 600) -> str:
    """A token of `claims`, expiring in `ttl` seconds (None: no `exp`), of header type `typ`.

    Signed as a JWS of the claims' JSON, so that claims pyjwt would not issue
    (a non-string `iss`, a NaN `exp`) can be tried too.
    """
    body = dict(claims)
    if ttl is not None:
        body.setdefault("exp", int(time.time() + ttl))
    # pyjwt adds `typ: JWT` unless told otherwise; an absent `typ` is a case of its own.
    return jwt.api_jws.encode(
        json.dumps(body).encode(), SECRET, algorithm="HS256", headers={"typ": typ}
    )


def detail(actions: list[str], *topics: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "mercure", "actions": actions, "topics": list(topics), **extra}


def current(*details: Any, **claims: Any) -> dict[str, Any]:
    return {"authorization_details": list(details), **claims}


def legacy(subscribe: list[str] = [], publish: list[str] = [], **mercure: Any) -> dict[str, Any]:  # noqa: B006
    return {"mercure": {"subscribe": subscribe, "publish": publish, **mercure}}


def refusal(hub: Authority, token: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as refused:
        hub.verify(token)
    return refused.value


# -- the current form --------------------------------------------------------------------------


def test_authorization_details_grant_actions_on_topics() -> None:
    hub = authority()
    token = sign(
        current(
            detail(
                ["subscribe"], {"match": BOOKS + "1"}, {"match": BOOKS + "7", "matchType": "Exact"}
            ),
            detail(["publish", "subscribe"], {"match": BOOKS + ":id", "matchType": "URLPattern"}),
            {"type": "another-api", "anything": ["goes"]},
            sub="urn:uuid:1",
        )
    )
    grant = hub.verify(token)
    assert grant.can_subscribe(BOOKS + "1") and grant.can_subscribe(BOOKS + "2")
    assert grant.can_publish(BOOKS + "2") and not grant.can_publish("https://example.com/x")
    assert grant.subject == "urn:uuid:1"
    assert grant.expires is not None and grant.expires > time.time()
    only_books = sign(current(detail(["subscribe"], {"match": BOOKS + "1"})))
    assert not hub.verify(only_books).can_publish(BOOKS + "1")
    assert not hub.verify(only_books).can_subscribe(BOOKS + "2"), "the spec's example"


def test_the_wildcard_and_relative_patterns_in_details() -> None:
    hub = authority()
    grant = hub.verify(
        sign(
            current(
                detail(["publish"], {"match": "*", "matchType": "URLPattern"}),
                detail(
                    ["subscribe"],
                    {"match": "/.well-known/mercure/subscriptions/*", "matchType": "URLPattern"},
                ),
            )
        )
    )
    assert grant.can_publish("anything at all")
    assert grant.can_subscribe("/.well-known/mercure/subscriptions/Exact/a/b")
    assert grant.can_subscribe(HUB + ".well-known/mercure/subscriptions/Exact/a/b")
    assert not grant.can_subscribe("https://example.com/.well-known/mercure/subscriptions/a")


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt"])
def test_the_current_form_is_typed_at_jwt(typ: str) -> None:
    grant = authority().verify(sign(current(detail(["subscribe"], {"match": "a"})), typ=typ))
    assert grant.can_subscribe("a")


def test_authorization_details_need_the_at_jwt_type() -> None:
    for typ in ("JWT", None):
        reason = str(
            refusal(authority(), sign(current(detail(["subscribe"], {"match": "a"})), typ))
        )
        assert reason.startswith("the token is not valid:") and "at+jwt" in reason
    assert "'id+jwt' is not at+jwt" in str(refusal(authority(), sign(legacy(["a"]), "id+jwt")))


def test_the_current_form_must_expire() -> None:
    reason = str(refusal(authority(), sign(current(), ttl=None)))
    assert "no expiry ('exp')" in reason
    assert str(refusal(authority(), sign(current(), ttl=-5))) == "the token has expired"


def test_nbf_is_enforced() -> None:
    hub = authority()
    later = sign(current(nbf=int(time.time()) + 300))
    assert "not valid yet" in str(refusal(hub, later))
    assert hub.verify(sign(current(nbf=int(time.time()) - 5))).subscribe == ()


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_time_claims_must_be_finite_numbers(claim: str) -> None:
    for value in (str(int(time.time()) + 60), True, float("nan"), float("inf")):
        reason = str(refusal(authority(), sign({claim: value}, ttl=None, typ="JWT")))
        assert f"'{claim}' claim must be a number" in reason


def test_the_audience_must_name_the_hub_when_it_is_set() -> None:
    hub = authority(jwt_audience=HUB)
    assert hub.verify(sign(current(aud=HUB))).subscribe == ()
    assert hub.verify(sign(current(aud=["https://other.example/", HUB]))).subscribe == ()
    for audience in ("https://other.example/", ["https://other.example/"], None, 7):
        claims = current() if audience is None else current(aud=audience)
        assert "audience ('aud')" in str(refusal(hub, sign(claims)))
    assert "audience" in str(refusal(hub, sign(legacy(["a"]), typ="JWT"))), "both forms"
    assert authority().verify(sign(current(aud="https://anyone.example/"))).subscribe == ()


def test_the_issuer_must_be_listed_when_issuers_are_set() -> None:
    hub = authority(jwt_issuers=("https://as.example", "https://as2.example"))
    assert hub.verify(sign(current(iss="https://as2.example"))).subscribe == ()
    for issuer in ("https://evil.example", ["https://as.example"], None):
        claims = current() if issuer is None else current(iss=issuer)
        assert "issuer ('iss')" in str(refusal(hub, sign(claims)))


@pytest.mark.parametrize(
    "details",
    [
        {"type": "mercure"},
        "not an array",
        ["not an object"],
        [{"actions": ["subscribe"]}],
        [detail([], {"match": "a"})],
        [detail(["subscribe", "delete"], {"match": "a"})],
        [detail("subscribe", {"match": "a"})],  # type: ignore[arg-type]
        [detail(["subscribe"])],
        [{"type": "mercure", "actions": ["subscribe"]}],
        [detail(["subscribe"], "a")],
        [detail(["subscribe"], {"matchType": "Exact"})],
        [detail(["subscribe"], {"match": 7})],
        [detail(["subscribe"], {"match": "a", "matchType": "exact"})],
        [detail(["subscribe"], {"match": "a", "matchType": "URITemplate"})],
        [detail(["subscribe"], {"match": "https://e.com/(a", "matchType": "URLPattern"})],
        [detail(["subscribe"], {"match": "a\nb"})],
        [detail(["subscribe"], {"match": ""})],
        [detail(["subscribe"], {"match": "a"}, payload="not an object")],
        [detail(["subscribe"], {"match": "a"}, payload=None)],
    ],
)
def test_one_malformed_mercure_detail_voids_the_whole_token(details: Any) -> None:
    # A good entry first: partial acceptance would keep it.
    good = detail(["publish", "subscribe"], {"match": "*"})
    claims = {"authorization_details": [good, *details] if isinstance(details, list) else details}
    refused = refusal(authority(), sign(claims))
    assert str(refused).startswith("the token is not valid:") and refused.error == "invalid_token"


def test_limits_on_details_topics_and_patterns() -> None:
    hub = authority(mercure_max_topic_bytes=64)
    many = [detail(["subscribe"], {"match": str(n)}) for n in range(33)]
    assert "more than 32 mercure details" in str(refusal(hub, sign(current(*many))))
    assert hub.verify(sign(current(*many[:32]))).can_subscribe("31")
    wide = detail(["subscribe"], *({"match": str(n)} for n in range(257)))
    assert "more than 256 entries" in str(refusal(hub, sign(current(wide))))
    long = detail(["subscribe"], {"match": "x" * 65})
    assert "65 bytes" in str(refusal(hub, sign(current(long))))


def test_a_token_without_either_claim_is_valid_and_allows_nothing() -> None:
    hub = authority()
    for token in (sign({}), sign({}, typ="JWT"), sign({"mercure": "nonsense"}, typ=None)):
        grant = hub.verify(token)
        assert grant.subscribe == grant.publish == () and grant.payloads == ()
        assert not grant.can_subscribe("a") and grant.payload_for("a") is None


# -- the older form ----------------------------------------------------------------------------


def test_the_older_mercure_claim_keeps_working_while_legacy_tokens_are_on() -> None:
    hub = authority()
    token = sign(
        legacy(["user/42/*", BOOKS + "{id}", "exact"], ["*"], payload="anything"),
        typ=None,
        ttl=None,
    )
    grant = hub.verify(token)
    assert grant.expires is None, "exp is optional in the older form"
    assert grant.can_subscribe("user/42/inbox") and not grant.can_subscribe("user/43/inbox")
    assert grant.can_subscribe(BOOKS + "3") and grant.can_subscribe("exact")
    assert grant.can_publish("any/topic")
    assert grant.payload_for("whatever") == "anything", "one payload for every subscription"
    assert hub.verify(sign(legacy(["a"]), typ="JWT")).can_subscribe("a")
    assert "not valid" in str(refusal(hub, sign(legacy(["bad{"]), typ="JWT")))


def test_legacy_tokens_off_accepts_only_at_jwt() -> None:
    hub = authority(jwt_legacy_tokens="off")
    for typ in ("JWT", None):
        refused = refusal(hub, sign(legacy(["*"]), typ=typ))
        assert "must be at+jwt" in str(refused) and refused.error == "invalid_token"
    assert hub.verify(sign(current(detail(["subscribe"], {"match": "a"})))).can_subscribe("a")
    # An at+jwt token's `mercure` claim is not read: only authorization_details are.
    assert not hub.verify(sign(legacy(["*"]))).can_subscribe("a")


# -- payloads ----------------------------------------------------------------------------------


def test_the_payload_of_the_first_subscribe_detail_matching_the_subscription() -> None:
    token = sign(
        current(
            detail(["publish"], {"match": "*"}, payload={"never": "publish only"}),
            detail(["subscribe"], {"match": "https://example.com/foo"}, payload={"custom1": 1}),
            detail(
                ["subscribe"],
                {"match": "https://example.com/bar/:id", "matchType": "URLPattern"},
                payload={"custom2": 2},
            ),
            detail(["subscribe"], {"match": "https://example.com/baz"}),
            detail(["subscribe"], {"match": "*"}, payload={"custom3": 3}),
        )
    )
    grant = authority().verify(token)
    assert grant.payload_for("https://example.com/foo") == {"custom1": 1}
    assert grant.payload_for("https://example.com/bar/:id") == {"custom2": 2}, (
        "a URL pattern subscription's own string, read as a topic"
    )
    assert grant.payload_for("https://example.com/bar/7") == {"custom2": 2}
    assert grant.payload_for("https://example.com/other") == {"custom3": 3}
    assert len(grant.payloads) == 3


# -- where the token comes from ----------------------------------------------------------------


def test_exactly_one_place_is_read_header_then_query_then_cookie() -> None:
    hub = authority(jwt_cookie="myCookie")
    bearer = {"authorization": "Bearer from-header"}
    query = {"access_token": "from-query", "authorization": "from-old-query"}
    cookies = {"mercureAccessToken": "from-cookie", "myCookie": "from-old-cookie"}
    assert hub.token_of(bearer, cookies, query) == "from-header"
    assert hub.token_of({}, cookies, query) == "from-query"
    assert hub.token_of({}, cookies, {"authorization": "from-old-query"}) == "from-old-query"
    assert hub.token_of({}, cookies, {}) == "from-cookie"
    assert hub.token_of({}, {"myCookie": "from-old-cookie"}, {}) == "from-old-cookie"
    assert hub.token_of({}, {"mercureAuthorization": "x"}, {}) is None, "the cookie is renamed"
    assert hub.token_of({}, {}, {}) is None


def test_a_chosen_place_without_a_token_does_not_fall_back() -> None:
    hub = authority()
    cookies = {"mercureAccessToken": "from-cookie"}
    assert hub.token_of({"authorization": "Basic dXNlcjpwdw=="}, cookies, {}) is None
    assert hub.token_of({"authorization": "Bearer "}, cookies, {}) is None
    assert hub.token_of({}, cookies, {"access_token": ""}) is None
    assert hub.token_of({"authorization": "bearer  spaced "}, {}, {}) == "spaced"
    assert hub.token_of({"authorization": ""}, cookies, {}) == "from-cookie"


# -- refusals ----------------------------------------------------------------------------------


def test_refusals_carry_rfc_6750_errors_and_challenges() -> None:
    hub = authority()
    assert hub.grant_of(None) is None
    missing = refusal(hub, None)  # type: ignore[arg-type]
    assert missing.error is None and challenge(missing) == "Bearer"
    assert "token is required" in str(missing)
    bad = refusal(hub, "nonsense")
    assert bad.error == "invalid_token" and str(bad).startswith("the token is not valid: ")
    assert challenge(bad) == 'Bearer error="invalid_token"'
    meta = "https://hub.example/.well-known/oauth-protected-resource"
    assert challenge(bad, meta) == f'Bearer error="invalid_token", resource_metadata="{meta}"'
    assert challenge(missing, meta) == f'Bearer resource_metadata="{meta}"'
    with pytest.raises(Unauthorized, match="not valid"):
        hub.grant_of("nonsense")
    forbidden = Forbidden("no")
    assert challenge(forbidden) == 'Bearer error="insufficient_scope"'
    off = Authority(Settings())
    assert not off.enabled and refusal(off, "x").error == "invalid_token"
    assert refusal(off, None).error is None  # type: ignore[arg-type]


def test_a_token_signed_otherwise_is_refused() -> None:
    forged = jwt.encode(
        current(exp=int(time.time()) + 60), "another-secret-of-32-bytes-at-least", "HS256"
    )
    assert "Signature verification failed" in str(refusal(authority(), forged))
    unsigned = jwt.encode(current(exp=int(time.time()) + 60), "", "none")  # no key: not signed
    assert "algorithm 'none'" in str(refusal(authority(), unsigned))


def test_the_native_api_checks_private_topics_and_publishing() -> None:
    hub = authority(private_topics=("user/*",))
    assert hub.is_private("user/42/inbox") and not hub.is_private("news")
    assert hub.check_subscribe(["news"], None) is None
    with pytest.raises(Unauthorized, match="token is required"):
        hub.check_subscribe(["news", "user/42/inbox"], None)
    token = sign(legacy(["user/42/*"], ["user/42/*"]), typ=None)
    grant = hub.check_subscribe(["news", "user/42/inbox"], token)
    assert isinstance(grant, Grant)
    with pytest.raises(Forbidden, match="user/43/inbox") as refused:
        hub.check_subscribe(["user/43/inbox"], token)
    assert refused.value.error == "insufficient_scope"
    hub.check_publish("user/42/outbox", grant)
    with pytest.raises(Forbidden, match="publishing to user/43"):
        hub.check_publish("user/43/outbox", grant)
    current_token = sign(current(detail(["subscribe"], {"match": "user/42/inbox"})))
    assert hub.check_subscribe(["user/42/inbox"], current_token) is not None
