"""Which topics a Mercure subscription selects: topic rules and matcher types.

Mercure's current dialect names its matchers by type: `Exact` (byte-for-byte)
and `URLPattern` (the WHATWG URL Pattern standard). The older dialect, still
spoken by many clients and tokens, names "topic selectors": a URI template
(RFC 6570) when it holds `{`, otherwise an exact topic. The hub's own tokens
have always used `Glob` patterns (`user/42/*`), so a selector holding `*` is
one. Whatever the type, the value `*` alone is the wildcard.

Every pattern here is matched in time linear in the topic's length (times the
pattern's): URL patterns run on a linear-time regular expression engine, URI
templates are compiled so that no expression can be backtracked into, and
globs are scanned without a regular expression. A subscriber chooses its
patterns, so a pathological one must cost it, not the hub.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urljoin, urlsplit

from urlpattern import URLPattern

WILDCARD = "*"
EXACT = "Exact"
URL_PATTERN = "URLPattern"
URI_TEMPLATE = "URITemplate"
GLOB = "Glob"
MATCH_TYPES = (EXACT, URL_PATTERN, URI_TEMPLATE, GLOB)

# Query parameters naming a subscription's matchers, and their types; `topic` is
# the older dialect's selector. Any other name in the `match` prefix is refused.
MATCH_PARAMETERS = {"match": EXACT, "matchExact": EXACT, "matchURLPattern": URL_PATTERN}
SELECTOR_PARAMETER = "topic"
RESERVED_PREFIX = "match"

RESERVED_PATH = "/.well-known/mercure"
# The WHATWG parser's view of the reserved namespace: it reads `\` as `/`, decodes
# `%2e` dot segments and trims spaces, as a subscriber's URL pattern would.
_RESERVED_PATTERNS = (
    URLPattern({"pathname": RESERVED_PATH}),
    URLPattern({"pathname": RESERVED_PATH + "/*"}),
)

_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
# Answers a TopicFilter keeps: enough for the topics of a burst of updates.
FILTER_MEMO = 1024


class InvalidTopic(ValueError):
    """A topic string Mercure refuses; the message is the reason."""


class InvalidMatcher(ValueError):
    """Matchers the hub refuses for a subscription (400); the message is a one-line reason."""


def check_topic(text: str, max_bytes: int) -> str:
    """`text`, if Mercure allows it as a topic or a matcher; `InvalidTopic` otherwise."""
    if not text:
        raise InvalidTopic("a topic cannot be empty")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        # A str can only fail to encode through lone surrogates: bytes that were not UTF-8.
        raise InvalidTopic("a topic must be valid UTF-8") from None
    control = _CONTROLS.search(text)
    if control is not None:
        raise InvalidTopic(
            f"a topic cannot hold control characters (U+{ord(control.group()):04X} "
            f"at {control.start()})"
        )
    if size > max_bytes:
        raise InvalidTopic(f"a topic of {size} bytes is over the limit of {max_bytes}")
    return text


@dataclass(frozen=True, slots=True)
class Matcher:
    """One topic matcher: its type, its pattern as given, and the base relative URLs take.

    The compiled form is built once, when the matcher is; a matcher whose
    pattern does not compile (only if built directly rather than through
    `compile_matcher`) matches nothing.
    """

    match_type: str
    pattern: str
    base_url: str = field(default="", repr=False)
    _test: Callable[[str], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            test = _compiled(self.match_type, self.pattern, self.base_url)
        except InvalidMatcher:
            test = _never
        object.__setattr__(self, "_test", test)

    @property
    def wildcard(self) -> bool:
        return self.pattern == WILDCARD

    def matches(self, topic: str) -> bool:
        return self._test(topic)


def compile_matcher(match_type: str, pattern: str, base_url: str) -> Matcher:
    """A matcher of a known type whose pattern compiles; `InvalidMatcher` otherwise."""
    _compiled(match_type, pattern, base_url)
    return Matcher(match_type, pattern, base_url)


def selector(text: str, base_url: str) -> Matcher:
    """The older dialect's topic selector: a URI template if it holds `{`, else exact.

    A selector holding `*` (and no `{`) is a glob, as the hub's own tokens
    (`user/42/*`) have always been read; `*` alone is the wildcard.
    """
    if text == WILDCARD:
        return compile_matcher(EXACT, text, base_url)
    if "{" in text:
        return compile_matcher(URI_TEMPLATE, text, base_url)
    if WILDCARD in text:
        return compile_matcher(GLOB, text, base_url)
    return compile_matcher(EXACT, text, base_url)


def subscription_matchers(
    query: Sequence[tuple[str, str]], base_url: str, max_matchers: int, max_bytes: int
) -> list[Matcher]:
    """The matchers a subscription's query string names, in order, each kept once.

    The limit counts parameters, not distinct matchers: what it bounds is the
    work of reading the request.
    """
    matchers: dict[tuple[str, str], Matcher] = {}
    count = 0
    for name, value in query:
        if name in MATCH_PARAMETERS:
            match_type = MATCH_PARAMETERS[name]
        elif name == SELECTOR_PARAMETER:
            match_type = ""
        elif _ascii_lower(name[: len(RESERVED_PREFIX)]) == RESERVED_PREFIX:
            raise InvalidMatcher(
                f"{name[:40]!r} is not a matcher parameter: use match, matchExact, "
                "matchURLPattern or topic"
            )
        else:
            continue  # another parameter: lastEventID, access_token...
        count += 1
        if count > max_matchers:
            raise InvalidMatcher(f"a subscription may name at most {max_matchers} topic matchers")
        try:
            check_topic(value, max_bytes)
        except InvalidTopic as exc:
            raise InvalidMatcher(f"{name}: {exc}") from None
        try:
            if match_type:
                matcher = compile_matcher(match_type, value, base_url)
            else:
                matcher = selector(value, base_url)
        except InvalidMatcher as exc:
            raise InvalidMatcher(f"{name}: {exc}") from None
        matchers.setdefault((matcher.match_type, matcher.pattern), matcher)
    if not matchers:
        raise InvalidMatcher(
            "name at least one topic: ?match=TOPIC, ?matchURLPattern=PATTERN or ?topic=SELECTOR"
        )
    return list(matchers.values())


class TopicFilter:
    """The union of some matchers, asked about many topics: answers are memoised per topic.

    Exact matchers are answered from a set; the others are tried in turn and
    their answer kept, a bounded number of topics at a time (the oldest is
    forgotten first), as the same few topics come up again and again.
    """

    __slots__ = ("_memo", "_patterned", "exact", "matchers", "wildcard")

    def __init__(self, matchers: Sequence[Matcher]) -> None:
        self.matchers: tuple[Matcher, ...] = tuple(matchers)
        self.wildcard: bool = any(matcher.wildcard for matcher in self.matchers)
        self.exact: frozenset[str] = frozenset(
            m.pattern for m in self.matchers if m.match_type == EXACT and not m.wildcard
        )
        self._patterned = tuple(m for m in self.matchers if m.match_type != EXACT)
        self._memo: dict[str, bool] = {}

    def matches(self, topic: str) -> bool:
        if self.wildcard or topic in self.exact:
            return True
        if not self._patterned:
            return False
        answer = self._memo.get(topic)
        if answer is None:
            answer = any(matcher.matches(topic) for matcher in self._patterned)
            if len(self._memo) >= FILTER_MEMO:
                del self._memo[next(iter(self._memo))]
            self._memo[topic] = answer
        return answer

    def matches_any(self, topics: Sequence[str]) -> bool:
        return any(self.matches(topic) for topic in topics)


def in_reserved_namespace(topic: str, base_url: str) -> bool:
    """Whether `topic`, resolved against the hub's URL, is under `/.well-known/mercure`.

    The spec's rule reads the topic as an RFC 3986 reference, whatever its
    scheme or authority. The WHATWG parser, which URL patterns use, reads some
    references differently (`\\` as `/`, `%2e` as a dot segment), so a topic
    either reading puts in the namespace is in it: a publisher must not be able
    to forge an update that a subscriber's pattern takes for the hub's own.
    """
    if "well-known" not in topic or "mercure" not in topic:
        # Neither reading decodes a percent-encoded letter: the words must stand as they are.
        return False
    try:
        path = urlsplit(urljoin(base_url, topic)).path
    except ValueError:
        path = ""  # not a URI reference (a bad IPv6 host): only the WHATWG reading is left
    if path == RESERVED_PATH or path.startswith(RESERVED_PATH + "/"):
        return True
    try:
        return any(pattern.test(topic, base_url) for pattern in _RESERVED_PATTERNS)
    except (ValueError, TypeError):
        return False


def _ascii_lower(text: str) -> str:
    # The spec's comparison is ASCII case-insensitive: no other character folds to ASCII.
    return text.lower() if text.isascii() else text


def _never(topic: str) -> bool:
    return False


def _always(topic: str) -> bool:
    return True


@lru_cache(maxsize=4096)
def _compiled(match_type: str, pattern: str, base_url: str) -> Callable[[str], bool]:
    """The test a matcher runs on topics; `InvalidMatcher` when it cannot be built."""
    if match_type not in MATCH_TYPES:
        raise InvalidMatcher(
            f"unknown matcher type {match_type[:40]!r}: use {', '.join(MATCH_TYPES[:2])}"
        )
    if pattern == WILDCARD:
        return _always
    if match_type == EXACT:
        return pattern.__eq__
    if match_type == URL_PATTERN:
        return _url_pattern(pattern, base_url)
    if match_type == URI_TEMPLATE:
        return _uri_template(pattern)
    return _glob(pattern)


def _url_pattern(pattern: str, base_url: str) -> Callable[[str], bool]:
    # A pattern and a topic are both resolved against the hub's URL when relative;
    # an absolute pattern compiles the same with a base as without.
    try:
        compiled = URLPattern(pattern, base_url)
    except (ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidMatcher(f"not a URL pattern ({reason[:120]}): {pattern[:80]!r}") from None

    def test(topic: str) -> bool:
        try:
            return compiled.test(topic, base_url)
        except (ValueError, TypeError):
            return False  # a topic the URL parser refuses (lone surrogates): no match

    return test


def _glob(pattern: str) -> Callable[[str], bool]:
    """`*` is any run of characters (`/` included); everything else is literal.

    Scanning for each literal part's first occurrence is enough: taking the
    earliest place a part fits only leaves more room for the parts after it.
    """
    if WILDCARD not in pattern:
        return pattern.__eq__
    first, *middle, last = pattern.split(WILDCARD)

    def test(topic: str) -> bool:
        if len(topic) < len(first) + len(last):
            return False
        if not topic.startswith(first) or not topic.endswith(last):
            return False
        end = len(topic) - len(last)
        position = len(first)
        for part in middle:
            found = topic.find(part, position, end)
            if found < 0:
                return False
            position = found + len(part)
        return True

    return test


# -- URI templates (RFC 6570, levels 1 to 4) as regular expressions --------------------------
#
# Each expression becomes the pattern of its operator's expansions. Matching must
# not backtrack without bound, so an expression is an atomic group: followed by
# literal text, it extends lazily to the first place that text follows (the text
# is inside the group), and otherwise it takes all it can. Inside a group the
# grammar is unambiguous (a separator is never a value character), so each group
# costs at most its stretch of the topic times the literal's length.

_UNRESERVED = r"A-Za-z0-9\-._~\u00a0-\U0010ffff"  # with IRI characters: topics are IRIs
_RESERVED = r":/?#\[\]@!$&'()*+,;="
_PCT = "%[0-9A-Fa-f]{2}"
_VARCHAR = rf"(?:[A-Za-z0-9_]|{_PCT})"
_VARSPEC = re.compile(rf"({_VARCHAR}(?:\.?{_VARCHAR})*)(?::([1-9][0-9]{{0,3}})|(\*))?")
_OPERATORS = "+#./;?&"
_TEMPLATE_PARTS = re.compile(r"\{([^{}]*)\}|([^{}]+)|([{}])")


@dataclass(frozen=True, slots=True)
class _Varspec:
    name: str
    prefix: int | None
    explode: bool


def _uri_template(template: str) -> Callable[[str], bool]:
    """A test of whether a topic is an expansion of `template`, taken whole.

    What the atomic groups cost: `{+path}/edit` reads `a/edit/b/edit` as
    path `a` and fails, and of two adjacent expressions (`{a}{b}`) the first
    takes all it can. Both are rare in topic selectors; unbounded matching
    time on a subscriber's pattern would not be.
    """
    pieces: list[str | tuple[str, list[_Varspec]]] = []
    for part in _TEMPLATE_PARTS.finditer(template):
        expression, literal, brace = part.groups()
        if brace is not None:
            raise InvalidMatcher(
                f"not a URI template: unbalanced {brace!r} at {part.start()}: {template[:80]!r}"
            )
        if literal is not None:
            pieces.append(literal)
        else:
            pieces.append(_expression(expression, template))
    regex = []
    index = 0
    while index < len(pieces):
        piece = pieces[index]
        index += 1
        if isinstance(piece, str):
            regex.append(re.escape(piece))
        elif index < len(pieces) and isinstance(pieces[index], str):
            following = re.escape(str(pieces[index]))
            index += 1
            regex.append(f"(?>{_expansion(*piece, lazy=True)}{following})")
        else:
            regex.append(f"(?>{_expansion(*piece, lazy=False)})")
    compiled = re.compile("".join(regex))

    def test(topic: str) -> bool:
        return compiled.fullmatch(topic) is not None

    return test


def _expression(text: str, template: str) -> tuple[str, list[_Varspec]]:
    operator = text[:1] if text[:1] in _OPERATORS else ""
    varspecs = []
    for spec in text[len(operator) :].split(","):
        parsed = _VARSPEC.fullmatch(spec)
        if parsed is None:
            raise InvalidMatcher(
                f"not a URI template: bad expression {{{text[:40]}}}: {template[:80]!r}"
            )
        name, prefix, explode = parsed.groups()
        varspecs.append(_Varspec(name, int(prefix) if prefix else None, explode is not None))
    return operator, varspecs


def _expansion(operator: str, varspecs: list[_Varspec], lazy: bool) -> str:
    """The pattern of what `{operator varspecs}` may expand to."""
    lazily = "?" if lazy else ""
    explode = any(spec.explode for spec in varspecs)
    prefixes = [spec.prefix for spec in varspecs]
    longest = None if None in prefixes else max(p for p in prefixes if p is not None)
    more = f"*{lazily}" if explode else f"{{0,{len(varspecs) - 1}}}{lazily}"

    def run(extra: str, least: int, limit: int | None = longest) -> str:
        """Characters of a value: the unreserved ones, `extra`, and percent-encodings."""
        count = f"{{{least},{limit}}}" if limit is not None else ("+" if least else "*")
        return f"(?:[{_UNRESERVED}{extra}]|{_PCT}){count}{lazily}"

    if operator == "":
        if explode:  # a list's items and a map's pairs joined by commas
            return run(",=", 1)
        value = run("", 1)
        return f"{value}(?:,{value}){more}"
    if operator == "+":  # reserved characters pass through, commas too: one run
        return run(_RESERVED, 1)
    if operator == "#":
        return f"(?:\\#{run(_RESERVED, 0)})?{lazily}"
    if operator == ".":  # dots are unreserved: the items are one run
        return f"(?:\\.{run(',=', 0)})?{lazily}"
    if operator == "/":
        segment = f"/{run(',=', 0)}"
        count = f"*{lazily}" if explode else f"{{0,{len(varspecs)}}}{lazily}"
        return f"(?:{segment}){count}"
    # `;`, `?` and `&` name their values: `;x=1;y`, `?x=1&y=`, `&x=1`.
    first, separator = (";", ";") if operator == ";" else (re.escape(operator), "&")
    if explode:
        name = run("", 1, None)  # a map's keys, which no prefix bounds
    else:
        name = "(?:" + "|".join(re.escape(spec.name) for spec in varspecs) + ")"
    value = f"={run(',', 0)}"
    item = f"{name}(?:{value})?{lazily}" if operator == ";" else f"{name}{value}"
    return f"(?:{first}{item}(?:{separator}{item}){more})?{lazily}"
