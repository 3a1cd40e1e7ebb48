"""The scenarios of the benchmark, and their quick (smoke test) versions."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "live" (publish and measure), "idle" (memory), "storm" (resume)
    clients: int
    topics: int = 1
    rate: float = 0.0  # events/s per topic
    duration: float = 0.0  # seconds of publishing
    missed: int = 0  # storm: events each client resumes
    chart: bool = False  # a point of the deliveries/latency vs clients chart
    required: bool = True  # named by the issue (the others fill in the chart)

    @property
    def offered_deliveries(self) -> float:
        """Deliveries per second the schedule asks for: each client gets its topic's events."""
        return self.clients * self.rate

    def describe(self) -> str:
        if self.kind == "idle":
            return f"{self.clients:,} idle connections"
        if self.kind == "storm":
            return f"reconnect storm: {self.clients:,} clients resume {self.missed:,} missed events each"
        if self.topics > 1:
            return f"{self.topics:,} topics, one client each, {self.rate:g} ev/s each"
        return f"{self.clients:,} clients, one topic, {self.rate:g} ev/s"


def default_scenarios(duration: float) -> list[Scenario]:
    d = duration
    return [
        Scenario("fanout-1k-100", "live", 1000, rate=100, duration=d, chart=True),
        Scenario("fanout-1k-1000", "live", 1000, rate=1000, duration=d, chart=True),
        Scenario("fanout-5k-100", "live", 5000, rate=100, duration=d, chart=True),
        Scenario("fanout-2k-100", "live", 2000, rate=100, duration=d, chart=True, required=False),
        Scenario("fanout-250-1000", "live", 250, rate=1000, duration=d, chart=True, required=False),
        Scenario("fanout-500-1000", "live", 500, rate=1000, duration=d, chart=True, required=False),
        Scenario("idle-10k", "idle", 10_000),
        Scenario("topics-10k", "live", 10_000, topics=10_000, rate=10, duration=d),
        Scenario("storm-1k", "storm", 1000, missed=1000),
    ]


def quick(s: Scenario) -> Scenario:
    """A tenth of the clients and topics, two seconds of publishing."""
    return replace(
        s,
        clients=max(10, s.clients // 10),
        topics=max(1, s.topics // 10),
        duration=min(s.duration, 2.0),
        missed=max(10, s.missed // 10),
    )
