"""Mercure's topic matchers: which topics a subscription selects, and which it may not name."""

from __future__ import annotations

import re

import pytest

from hub.mercure.matchers import (
    WILDCARD,
    InvalidMatcher,
    InvalidTopic,
    Matcher,
    TopicFilter,
    check_topic,
    compile_matcher,
    in_reserved_namespace,
    selector,
    subscription_matchers,
)

HUB = "https://hub.example/"


def subscription(query: list[tuple[str, str]]) -> list[Matcher]:
    """The matchers of a subscription to a hub allowing 8 matchers of up to 64 bytes."""
    return subscription_matchers(query, HUB, max_matchers=8, max_bytes=64)


def matches(match_type: str, pattern: str, topic: str) -> bool:
    return compile_matcher(match_type, pattern, HUB).matches(topic)


# -- topics ------------------------------------------------------------------------------------


def test_a_topic_is_non_empty_utf8_without_controls_and_within_the_limit() -> None:
    assert check_topic("https://example.com/books/1", 64) == "https://example.com/books/1"
    assert check_topic("café ☕", 64) == "café ☕", "IRIs may hold any non-control character"
    assert check_topic("é" * 32, 64) == "é" * 32, "the limit counts UTF-8 bytes"
    for bad, reason in [
        ("", "empty"),
        ("\ud800", "UTF-8"),
        ("a\x00b", "U+0000"),
        ("a\nb", "U+000A"),
        ("a\x7fb", "U+007F"),
        ("a\x85b", "U+0085"),
        ("a\x9fb", "U+009F"),
        ("é" * 33, "66 bytes"),
    ]:
        with pytest.raises(InvalidTopic, match=re.escape(reason)):
            check_topic(bad, 64)


# -- matcher types -----------------------------------------------------------------------------


def test_exact_matching_is_byte_for_byte_and_never_resolved() -> None:
    assert matches("Exact", "https://example.com/foo", "https://example.com/foo")
    assert not matches("Exact", "https://example.com/foo", "https://example.com/Foo")
    assert not matches("Exact", "https://example.com/foo", "https://example.com/foo/")
    assert not matches("Exact", "/foo", "https://hub.example/foo"), "no base URL for Exact"
    assert not matches("Exact", "café", "cafe\u0301"), "no Unicode normalization"


def test_the_wildcard_matches_every_topic_whatever_the_type() -> None:
    for match_type in ("Exact", "URLPattern", "URITemplate", "Glob"):
        wildcard = compile_matcher(match_type, WILDCARD, HUB)
        assert wildcard.wildcard
        assert wildcard.matches("https://example.com/anything") and wildcard.matches("bar")


def test_url_patterns_follow_the_specs_examples() -> None:
    books = "https://example.com/books/:id"
    assert matches("URLPattern", books, "https://example.com/books/1")
    assert not matches("URLPattern", books, "https://example.com/books/1/reviews")
    assert not matches("URLPattern", books, "https://example.com/authors/1")
    assert matches("URLPattern", books, "https://EXAMPLE.com/books/1"), "hosts ignore case"
    assert not matches("URLPattern", books, "https://example.com/BOOKS/1"), "paths do not"
    assert not matches("URLPattern", books, "not a URL at all")


def test_relative_url_patterns_and_relative_topics_resolve_against_the_hub() -> None:
    events = "/.well-known/mercure/subscriptions/Exact/:topic/:subscriber"
    event_topic = "/.well-known/mercure/subscriptions/Exact/foo/urn%3Auuid%3A1"
    assert matches("URLPattern", events, event_topic)
    assert matches("URLPattern", events, HUB.rstrip("/") + event_topic), "same resource"
    assert not matches("URLPattern", events, "https://elsewhere.example" + event_topic)
    assert matches("URLPattern", "https://hub.example/books/:id", "/books/1")


def test_a_url_pattern_that_does_not_compile_is_refused() -> None:
    for bad in ["https://example.com/(a", "https://example.com/:", "https://example.com/((?=a)a)"]:
        with pytest.raises(InvalidMatcher, match="not a URL pattern"):
            compile_matcher("URLPattern", bad, HUB)


def test_a_pathological_url_pattern_is_matched_in_linear_time() -> None:
    # (a+)+b against a run of a's is the classic exponential case for a backtracking engine.
    pattern = compile_matcher("URLPattern", "https://example.com/(a+)+b", HUB)
    assert not pattern.matches("https://example.com/" + "a" * 50_000 + "c")
    assert pattern.matches("https://example.com/aaab")


def test_uri_templates_of_the_older_dialect() -> None:
    book = "https://example.com/books/{id}"
    assert matches("URITemplate", book, "https://example.com/books/1")
    assert matches("URITemplate", book, "https://example.com/books/caf%C3%A9")
    assert not matches("URITemplate", book, "https://example.com/books/")
    assert not matches("URITemplate", book, "https://example.com/books/1/2"), "no / in {id}"
    anything = "https://example.com/{+path}"
    assert matches("URITemplate", anything, "https://example.com/a/b?c=d#e")
    assert not matches("URITemplate", anything, "https://other.example/a")
    edit = "https://example.com/{+path}/edit"
    assert matches("URITemplate", edit, "https://example.com/a/b/edit")
    assert matches("URITemplate", "https://example.com/{id}.json", "https://example.com/12.json")


def test_uri_template_query_and_path_operators() -> None:
    query = "https://example.com/books{?lang}"
    assert matches("URITemplate", query, "https://example.com/books")
    assert matches("URITemplate", query, "https://example.com/books?lang=fr")
    assert not matches("URITemplate", query, "https://example.com/books?other=fr")
    both = "https://example.com/books{?q,lang}"
    assert matches("URITemplate", both, "https://example.com/books?q=dune&lang=fr")
    assert not matches("URITemplate", both, "https://example.com/books?q=a&lang=b&q=c")
    assert matches("URITemplate", "https://example.com{/path*}", "https://example.com/a/b/c")
    assert matches("URITemplate", "https://example.com/x{;a,b}", "https://example.com/x;a=1;b")
    assert matches("URITemplate", "https://example.com/x{.ext}", "https://example.com/x.json")
    assert matches("URITemplate", "https://example.com/x{#part}", "https://example.com/x#a/b")
    assert matches("URITemplate", "https://example.com/{id:3}", "https://example.com/abc")
    assert not matches("URITemplate", "https://example.com/{id:3}", "https://example.com/abcd")


def test_a_malformed_uri_template_is_refused() -> None:
    for bad in ["x{", "x}", "{}", "{a b}", "{=a}", "{a,}", "{a:0}", "{a:10000}", "{{a}"]:
        with pytest.raises(InvalidMatcher, match="not a URI template"):
            compile_matcher("URITemplate", bad, HUB)


def test_a_pathological_uri_template_is_matched_without_backtracking() -> None:
    topic = "https://example.com/" + "a/" * 2_000 + "!"
    assert not matches("URITemplate", "https://example.com/{+a}/{+b}/{+c}/{+d}/{+e}/end", topic)
    assert not matches("URITemplate", "https://example.com/{a}{b}{c}{d}{e}{f}{g}x", topic)
    assert not matches("URITemplate", "{+a}{+b}{+c}{+d}{+e}{+f}{+g}{+h}x", topic)
    assert matches("URITemplate", "https://example.com/{+a}/{+b}!", topic)


def test_globs_of_the_hubs_own_tokens() -> None:
    assert matches("Glob", "user/42/*", "user/42/inbox")
    assert matches("Glob", "user/42/*", "user/42/a/b"), "* runs over /"
    assert not matches("Glob", "user/42/*", "user/43/inbox")
    assert matches("Glob", "a*b*c", "a-b-b-c")
    assert not matches("Glob", "a*a", "a"), "the parts cannot overlap"
    assert matches("Glob", "user/[1]/?*", "user/[1]/?x"), "only * is special"
    assert not matches("Glob", "user/[1]/?*", "user/1/xx")
    assert not matches("Glob", "*a*a*a*a*a*a*a*b", "a" * 50_000)


def test_an_unknown_matcher_type_is_refused_and_a_bad_matcher_built_directly_matches_nothing() -> (
    None
):
    with pytest.raises(InvalidMatcher, match="unknown matcher type"):
        compile_matcher("Regex", ".*", HUB)
    assert not Matcher("URLPattern", "https://example.com/(a", HUB).matches("https://example.com/")
    assert not Matcher("URLPattern", "/relative/:x").matches("/relative/1"), "needs a base"


def test_a_selector_is_a_template_a_glob_or_an_exact_topic() -> None:
    assert selector("*", HUB).wildcard
    assert selector("https://example.com/{id}", HUB).match_type == "URITemplate"
    assert selector("user/42/*", HUB).match_type == "Glob"
    assert selector("https://example.com/foo", HUB) == Matcher(
        "Exact", "https://example.com/foo", HUB
    )


# -- a subscription's query string -------------------------------------------------------------


def test_a_subscription_names_its_matchers_by_parameter() -> None:
    query = [
        ("match", "https://example.com/foo"),
        ("matchExact", "bar"),
        ("lastEventID", "earliest"),
        ("matchURLPattern", "https://example.com/bar/:id"),
        ("topic", "https://example.com/{id}"),
        ("access_token", "x"),
    ]
    assert [(m.match_type, m.pattern) for m in subscription(query)] == [
        ("Exact", "https://example.com/foo"),
        ("Exact", "bar"),
        ("URLPattern", "https://example.com/bar/:id"),
        ("URITemplate", "https://example.com/{id}"),
    ]


@pytest.mark.parametrize(
    "name", ["matchFoo", "MATCHexact", "matchexact", "Match", "matchurlpattern"]
)
def test_the_match_prefix_is_reserved(name: str) -> None:
    with pytest.raises(InvalidMatcher, match="not a matcher parameter"):
        subscription([("match", "a"), (name, "b")])


def test_matcher_values_follow_the_topic_rules_and_limits() -> None:
    for value, reason in [("a\x01", "U+0001"), ("x" * 65, "65 bytes"), ("", "empty")]:
        with pytest.raises(InvalidMatcher, match=re.escape(reason)):
            subscription([("match", value)])
    with pytest.raises(InvalidMatcher, match="at most 8"):
        subscription([("match", str(n)) for n in range(9)])
    with pytest.raises(InvalidMatcher, match="name at least one topic"):
        subscription([("lastEventID", "earliest")])
    with pytest.raises(InvalidMatcher, match="not a URL pattern"):
        subscription([("matchURLPattern", "https://example.com/(a")])


def test_identical_matchers_are_kept_once_and_the_wildcard_is_any_type() -> None:
    query = [("match", "a"), ("matchExact", "a"), ("matchURLPattern", "a"), ("match", "*")]
    matchers = subscription(query)
    assert [(m.match_type, m.pattern) for m in matchers] == [
        ("Exact", "a"),
        ("URLPattern", "a"),
        ("Exact", "*"),
    ]
    assert matchers[2].wildcard


# -- filters -----------------------------------------------------------------------------------


def test_a_filter_is_the_union_of_its_matchers() -> None:
    query = [("match", "https://example.com/foo"), ("matchURLPattern", "/books/:id")]
    selects = TopicFilter(subscription(query))
    assert not selects.wildcard and selects.exact == frozenset({"https://example.com/foo"})
    assert selects.matches("https://example.com/foo")
    assert selects.matches("https://hub.example/books/1") and selects.matches("/books/2")
    assert not selects.matches("https://example.com/bar")
    assert selects.matches_any(["nothing", "/books/3"]) and not selects.matches_any(["x", "y"])
    for n in range(3_000):  # past the memo's bound, answers stay right
        assert selects.matches(f"/books/{n}") and not selects.matches(f"/authors/{n}")


def test_a_filter_with_the_wildcard_matches_everything() -> None:
    selects = TopicFilter([compile_matcher("URLPattern", "*", HUB)])
    assert selects.wildcard and selects.exact == frozenset()
    assert selects.matches("anything") and selects.matches_any(["x"])
    assert not TopicFilter([]).matches("x")


# -- the hub's namespace -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    [
        "/.well-known/mercure",
        "/.well-known/mercure/x",
        "https://hub.example/.well-known/mercure/subscriptions/a",
        "https://elsewhere.example/.well-known/mercure/subscriptions/a",
        "//elsewhere.example/.well-known/mercure/x",
        "/books/../.well-known/mercure/x",
        "\\.well-known\\mercure\\subscriptions\\a",  # the URL parser's reading of \
        "/books/%2e%2e/.well-known/mercure/x",
    ],
)
def test_topics_in_the_reserved_namespace(topic: str) -> None:
    assert in_reserved_namespace(topic, HUB)


@pytest.mark.parametrize(
    "topic",
    [
        "https://example.com/.well-known/mercurex",
        "https://example.com/books/1",
        "/.well-known/mercure-not",
        "urn:example:/.well-known/mercure/x",
        "http://[::1/.well-known/x",
        "\ud800",
    ],
)
def test_topics_outside_the_reserved_namespace(topic: str) -> None:
    assert not in_reserved_namespace(topic, HUB)
