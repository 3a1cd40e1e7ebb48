"""Whatever the internet sends: never a 500, never a crash, other clients keep streaming."""

from __future__ import annotations

import asyncio
import base64
import json
import resource
import socket
import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from processes import Gateway, Gateways, Nginx
from sse_client import Listener, publisher

TOKEN = "fuzz-token"
SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=SURROGATES), max_size=80)
QUERY_KEYS = st.sampled_from(["topic", "last_event_id", "authorization", "x", ""])
HEADER_NAMES = st.sampled_from(
    ["Last-Event-ID", "Authorization", "Cookie", "Content-Type", "Origin", "X-Other"]
)
HEADER_VALUES = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=120)


@pytest.fixture
def fuzzed(gateway: Gateways) -> Gateway:
    return gateway(
        {"HUB_PUBLISH_TOKEN": TOKEN, "HUB_JWT_KEY": "k" * 32, "HUB_PRIVATE_TOPICS": "user/*"}
    )


def no_server_error(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code == 503, response.text
    assert "Traceback" not in response.text


@pytest.mark.anyio
async def test_fuzzed_requests_never_break_the_gateway_or_its_streams(
    fuzzed: Gateway, redis_url: str, key_prefix: str
) -> None:
    watcher = Listener(fuzzed.url, ["steady"]).start()
    await watcher.wait_connected()
    stop = asyncio.Event()

    async def publish_steadily() -> int:
        sent = 0
        async with publisher(redis_url, key_prefix) as pub:
            while not stop.is_set():
                await pub.publish("steady", str(sent))
                sent += 1
                await asyncio.sleep(0.02)
        return sent

    publishing = asyncio.create_task(publish_steadily())

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        query=st.lists(st.tuples(QUERY_KEYS, ANY_TEXT), max_size=5),
        headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=3),
        body=st.one_of(
            st.binary(max_size=300),
            ANY_TEXT.map(str.encode),
            st.dictionaries(
                st.sampled_from(["topic", "data", "type", "x"]),
                st.one_of(ANY_TEXT, st.integers(), st.none(), st.lists(st.integers(), max_size=3)),
                max_size=4,
            ).map(lambda d: __import__("json").dumps(d).encode()),
        ),
    )
    def one_request(query: list[tuple[str, str]], headers: dict[str, str], body: bytes) -> None:
        target = "/events?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in query)
        with httpx.Client(base_url=fuzzed.url, timeout=5) as http:
            with http.stream("GET", target, headers=headers) as response:
                if response.status_code != 200:  # a valid stream is left at once, unread
                    response.read()
                    no_server_error(response)
            for content_type in ("application/json", "application/x-www-form-urlencoded"):
                response = http.post(
                    "/publish",
                    content=body,
                    headers={
                        **headers,
                        "Authorization": f"Bearer {TOKEN}",
                        "Content-Type": content_type,
                    },
                )
                no_server_error(response)

    await asyncio.to_thread(one_request)
    stop.set()
    sent = await publishing
    await watcher.wait_for(sent, within=20)
    await watcher.close()
    assert watcher.data[:sent] == [str(n) for n in range(sent)], (
        "the other client streamed throughout"
    )
    assert fuzzed.returncode is None, "the gateway is still running"


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slowloris_connections_are_cut_off_at_the_load_balancer(
    gateway: Gateways, tmp_path: Path
) -> None:
    """Hundreds of clients that never finish their request: nginx drops them, the gateway never
    sees them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    hub = gateway()
    nginx = Nginx(tmp_path / "nginx", [hub]).start()
    try:
        before = rss_kb(hub.pid)
        sockets = []
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", nginx.port))
            sock.sendall(b"GET /events?topic=slow HTTP/1.1\r\nHost: x\r\n")  # never the blank line
            sockets.append(sock)
        with httpx.Client(base_url=nginx.url, timeout=5) as http:
            assert http.get("/healthz").status_code == 200, "others are still served"
        started = time.monotonic()
        for sock in sockets:
            sock.settimeout(30)
            while sock.recv(1024):  # nginx closes (socket.timeout here would fail the test)
                pass
        closed_after = time.monotonic() - started
        for sock in sockets:
            sock.close()
        assert closed_after < 20, "cut off within nginx's client_header_timeout"
        assert rss_kb(hub.pid) - before < 5_000, "the gateway held nothing for them"
    finally:
        nginx.close()


# -- the replay path and the token verifier, fuzzed --------------------------------------------

ID_PART = st.one_of(st.integers(0, 2**64 - 1), st.integers(2**64, 10**30)).map(str)
CURSORS = st.one_of(
    st.tuples(ID_PART, ID_PART).map("-".join),
    st.lists(
        st.text("0123456789abcdefghijklmnopqrstuvwxyz-", max_size=16), min_size=1, max_size=5
    ).map(".".join),
    st.text(st.characters(codec="utf-8", exclude_categories=SURROGATES), max_size=40),
)


def _signing_keys() -> list[tuple[str, object]]:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    other_rsa = rsa.generate_private_key(65537, 2048)
    return [
        ("HS256", "k" * 32),
        ("HS384", "h" * 48),
        ("HS512", "x" * 64),
        ("RS256", HUB_RSA_KEY),
        ("RS256", other_rsa),
        ("PS256", HUB_RSA_KEY),
        ("RS512", other_rsa),
        ("ES256", ec.generate_private_key(ec.SECP256R1())),
        ("ES384", ec.generate_private_key(ec.SECP384R1())),
        ("EdDSA", ed25519.Ed25519PrivateKey.generate()),
    ]


def _rsa_key() -> object:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(65537, 2048)


HUB_RSA_KEY = _rsa_key()
CLAIM_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    ANY_TEXT,
    st.lists(st.integers(), max_size=2),
    st.dictionaries(ANY_TEXT, st.integers(), max_size=2),
)
CLAIMS = st.fixed_dictionaries(
    {
        "mercure": st.one_of(
            st.fixed_dictionaries(
                {
                    "subscribe": st.one_of(st.just(["*"]), CLAIM_VALUES),
                    "publish": st.one_of(st.just(["*"]), CLAIM_VALUES),
                }
            ),
            CLAIM_VALUES,
        )
    },
    optional={"exp": CLAIM_VALUES, "nbf": CLAIM_VALUES, "iat": CLAIM_VALUES, "aud": CLAIM_VALUES},
)


def _token(draw_claims: dict[str, Any], algorithm: str, key: object, mangle: str) -> str:
    import jwt

    try:
        token = jwt.encode(draw_claims, key, algorithm=algorithm)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # claims PyJWT itself cannot encode (NaN, huge ints)
        token = jwt.encode({"mercure": {"subscribe": ["*"]}}, key, algorithm=algorithm)  # type: ignore[arg-type]
    if mangle == "none":
        header = (
            base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
            .rstrip(b"=")
            .decode()
        )
        return header + "." + token.split(".")[1] + "."
    if mangle == "truncate":
        return token[: len(token) // 2]
    if mangle == "swap-alg":
        header = (
            base64.urlsafe_b64encode(json.dumps({"alg": "HS256"}).encode()).rstrip(b"=").decode()
        )
        return header + "." + ".".join(token.split(".")[1:])
    return token


def test_fuzzed_cursors_and_tokens_of_every_kind_never_give_a_server_error(
    gateway: Gateways, tmp_path: Path
) -> None:
    """Cursors on the replay path (query and header), and tokens of every algorithm and key type."""
    from cryptography.hazmat.primitives import serialization

    pem = HUB_RSA_KEY.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "hub.pem").write_bytes(pem)
    hubs = [
        gateway(
            {
                "HUB_JWT_KEY": str(tmp_path / "hub.pem"),
                "HUB_JWT_ALGORITHMS": "RS256,PS256,ES256,HS256,EdDSA",
                "HUB_PRIVATE_TOPICS": "user/*",
            }
        ),
        gateway(
            {
                "HUB_JWT_KEY": "k" * 32,
                "HUB_JWT_ALGORITHMS": "HS256,HS384,RS256",
                "HUB_PRIVATE_TOPICS": "user/*",
                "HUB_PUBLISH_TOKEN": TOKEN,
            }
        ),
    ]
    signers = _signing_keys()

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        cursor=CURSORS,
        topics=st.lists(
            st.sampled_from(["news", "user/42", "user/43", "a"]), min_size=1, max_size=3
        ),
        claims=CLAIMS,
        signer=st.sampled_from(range(len(signers))),
        mangle=st.sampled_from(["", "", "none", "truncate", "swap-alg"]),
        where=st.sampled_from(["header", "cookie", "query"]),
        cursor_in_header=st.booleans(),
    )
    def one_request(
        cursor: str,
        topics: list[str],
        claims: dict[str, Any],
        signer: int,
        mangle: str,
        where: str,
        cursor_in_header: bool,
    ) -> None:
        algorithm, key = signers[signer]
        token = _token(claims, algorithm, key, mangle)
        params: list[tuple[str, str | int | float | bool | None]] = [("topic", t) for t in topics]
        headers: dict[str, str] = {}
        cookies: dict[str, str] = {}
        if cursor_in_header and cursor.isascii() and cursor.isprintable():
            headers["Last-Event-ID"] = cursor
        else:
            params.append(("last_event_id", cursor))
        if where == "header":
            headers["Authorization"] = f"Bearer {token}"
        elif where == "cookie":
            cookies["mercureAuthorization"] = token
        else:
            params.append(("authorization", token))
        for hub in hubs:
            with httpx.Client(base_url=hub.url, timeout=10, cookies=cookies) as http:
                with http.stream("GET", "/events", params=params, headers=headers) as response:
                    if response.status_code != 200:
                        response.read()
                        no_server_error(response)
                published = http.post(
                    "/publish",
                    json={"topic": topics[0], "data": "x"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                no_server_error(published)

    one_request()
    for hub in hubs:
        assert hub.returncode is None, "the gateway is still running"
        assert "Traceback" not in hub.log_text(), hub.log_text()[-3000:]
