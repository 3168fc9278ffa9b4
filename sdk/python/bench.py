"""What the CPU time processor costs per span: the same loop of spans on three TracerProviders,
one without any processor, one with a processor that only reads the thread CPU clock at each
span's start and end (the floor: two system calls on Linux), and one with the CPU time processor,
alternated in one run, median of the rounds.

    python bench.py [--spans 200000] [--rounds 5]

Each span is a child of a request span, started and ended through ``start_as_current_span`` as
instrumentations do. Neither provider exports anything, so the figures are the SDK's own cost and
the processor's on top of it. The cost is read from the thread's CPU clock, not the wall clock,
so that other processes on the machine do not show up in it.
"""

from __future__ import annotations

import argparse
import statistics
import time

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

import bottleneck_cputime


class ClockReads(SpanProcessor):
    """Reads the thread CPU clock once as a span starts and once as it ends, and nothing else."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        time.thread_time_ns()

    def on_end(self, span: ReadableSpan) -> None:
        time.thread_time_ns()


def ns_per_span(provider: TracerProvider, n_spans: int) -> float:
    tracer = provider.get_tracer("bench")
    start_ns = time.thread_time_ns()
    with tracer.start_as_current_span("request"):
        for _ in range(n_spans):
            with tracer.start_as_current_span("child"):
                pass
    return (time.thread_time_ns() - start_ns) / (n_spans + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    plain = TracerProvider()
    clock_reads = TracerProvider()
    clock_reads.add_span_processor(ClockReads())
    measured = TracerProvider()
    bottleneck_cputime.install(measured)
    providers = {
        "without processor": plain,
        "clock reads only": clock_reads,
        "with processor": measured,
    }
    # A warm-up round each, so that none pays for first-call costs.
    for provider in providers.values():
        ns_per_span(provider, 10_000)

    rounds: dict[str, list[float]] = {label: [] for label in providers}
    for _ in range(args.rounds):
        for label, provider in providers.items():
            rounds[label].append(ns_per_span(provider, args.spans))
    median = {label: statistics.median(values) for label, values in rounds.items()}
    print(f"spans per round: {args.spans}, rounds: {args.rounds} (median)")
    for label, values in rounds.items():
        each = " ".join(f"{value:.0f}" for value in values)
        print(f"{label:>20}  {median[label]:8.0f} CPU ns/span   rounds: {each}")
    base = median["without processor"]
    print(f"{'processor costs':>20}  {median['with processor'] - base:8.0f} CPU ns/span")
    print(f"{'of which clock reads':>20}  {median['clock reads only'] - base:8.0f} CPU ns/span")


if __name__ == "__main__":
    main()
