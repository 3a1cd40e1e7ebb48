"""The scenarios of the benchmark, and their quick (smoke test) versions."""

from __future__ import annotations

from dataclasses import dataclass, replace

PUBLISH_PATHS = {
    "": "the system's own: Redis (EVALSHA of the hub's script) for the hub, Nchan's HTTP /pub",
    "http": "HTTP, one event per request: the hub's POST /publish, Nchan's /pub",
    "http-batch": "HTTP, the hub's POST /publish with batches (a JSON array); Nchan's /pub",
}

FANOUTS_COMPARED = ("fanout-1k-100", "fanout-1k-1000", "fanout-5k-100")
MERCURE_COMPARED: dict[str, str] = {
    **{name: f"{name}-http" for name in FANOUTS_COMPARED},
    "sparse-http": "sparse-http",
    "sparse-http-2k": "sparse-http-2k",
}
"""The Mercure face against the native one, both published over HTTP, one event per request:
the scenario `hub-mercure` runs (published through POST /.well-known/mercure in all of them)
to the one `hub` runs for it (published through POST /publish). The `-http` fan-outs exist
for this alone: the plain ones publish the native hub into Redis. `sparse-http-2k` is
sparse-http at 2,000 events/s, which neither face's one gateway saturates at: CPU per
delivery compares the work each face does, not how each copes with more than it can take."""
NATIVE_HTTP_COUNTERPARTS = frozenset(v for k, v in MERCURE_COMPARED.items() if k != v)


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "live" (publish and measure), "idle" (memory), "storm" (resume), "join"
    clients: int
    topics: int = 1
    rate: float = 0.0  # events/s per topic (0 with count: as fast as possible)
    duration: float = 0.0  # seconds of publishing
    missed: int = 0  # storm, join: events each client resumes (join: 0 = fresh, no cursor)
    count: int = 0  # events per topic, published as fast as possible (rate 0)
    publish: str = ""  # a key of PUBLISH_PATHS
    chart: bool = False  # a point of the deliveries/latency vs clients chart
    required: bool = True  # named by the issue (the others fill in the chart)

    @property
    def offered_deliveries(self) -> float:
        """Deliveries per second the schedule asks for: each client gets its topic's events."""
        return self.clients * self.rate

    @property
    def http_publish(self) -> bool:
        return self.publish in ("http", "http-batch")

    def describe(self) -> str:
        if self.kind == "idle":
            return f"{self.clients:,} idle connections"
        if self.kind == "storm":
            return f"reconnect storm: {self.clients:,} clients resume {self.missed:,} missed events each"
        if self.kind == "join":
            how = f"resume {self.missed} missed events each" if self.missed else "fresh"
            return f"{self.clients:,} clients join at once on {self.topics:,} topics, {how}"
        how = {"http": ", POST /publish", "http-batch": ", POST /publish batches"}.get(
            self.publish, ""
        )
        if self.count:
            return f"{self.topics:,} topics, one client each, {self.count} events each at full speed{how}"
        if self.topics > 1:
            return f"{self.topics:,} topics, one client each, {self.rate:g} ev/s each{how}"
        return f"{self.clients:,} clients, one topic, {self.rate:g} ev/s{how}"


def default_scenarios(duration: float) -> list[Scenario]:
    d = duration
    return [
        Scenario("fanout-1k-100", "live", 1000, rate=100, duration=d, chart=True),
        Scenario("fanout-1k-1000", "live", 1000, rate=1000, duration=d, chart=True),
        Scenario("fanout-5k-100", "live", 5000, rate=100, duration=d, chart=True),
        Scenario("fanout-2k-100", "live", 2000, rate=100, duration=d, chart=True, required=False),
        Scenario("fanout-250-1000", "live", 250, rate=1000, duration=d, chart=True, required=False),
        Scenario("fanout-500-1000", "live", 500, rate=1000, duration=d, chart=True, required=False),
        # the native counterparts of the Mercure face's fan-outs: POST /publish, not Redis
        *(
            Scenario(
                f"fanout-{k}-{rate}-http",
                "live",
                clients,
                rate=rate,
                duration=d,
                publish="http",
                required=False,
            )
            for k, clients, rate in (("1k", 1000, 100), ("1k", 1000, 1000), ("5k", 5000, 100))
        ),
        Scenario("idle-10k", "idle", 10_000),
        Scenario("topics-10k", "live", 10_000, topics=10_000, rate=10, duration=d),
        Scenario("storm-1k", "storm", 1000, missed=1000),
        # issue 13: sparse topics, publishing over HTTP, joins
        *(
            Scenario(name, "live", 10_000, topics=10_000, rate=0.5, duration=d, publish=how)
            for name, how in (
                ("sparse-10k", ""),
                ("sparse-http", "http"),
                ("sparse-http-batch", "http-batch"),
            )
        ),
        Scenario(
            "sparse-http-2k", "live", 10_000, topics=10_000, rate=0.2, duration=d, publish="http"
        ),
        Scenario(
            "publish-http-max",
            "live",
            10_000,
            topics=10_000,
            count=max(2, round(d / 2)),
            publish="http",
        ),
        Scenario(
            "publish-http-max-batch",
            "live",
            10_000,
            topics=10_000,
            count=max(2, round(d / 2)),
            publish="http-batch",
        ),
        Scenario("join-10k", "join", 10_000, topics=10_000),
        Scenario("join-10k-resume", "join", 10_000, topics=10_000, missed=10),
    ]


def quick(s: Scenario) -> Scenario:
    """A tenth of the clients and topics, two seconds of publishing."""
    return replace(
        s,
        clients=max(10, s.clients // 10),
        topics=max(1, s.topics // 10),
        duration=min(s.duration, 2.0),
        missed=max(10, s.missed // 10) if s.missed else 0,
        count=min(s.count, 2),
    )
