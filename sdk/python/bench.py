"""What the CPU time processor costs per span: the same loop of spans on two TracerProviders, one
with the processor and one without, alternated in one run, median of the rounds.

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

from opentelemetry.sdk.trace import TracerProvider

import bottleneck_cputime


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
    measured = TracerProvider()
    bottleneck_cputime.install(measured)
    # A warm-up round each, so that neither pays for first-call costs.
    ns_per_span(plain, 10_000)
    ns_per_span(measured, 10_000)

    without, with_cpu = [], []
    for _ in range(args.rounds):
        without.append(ns_per_span(plain, args.spans))
        with_cpu.append(ns_per_span(measured, args.spans))
    base, cpu = statistics.median(without), statistics.median(with_cpu)
    print(f"spans per round: {args.spans}, rounds: {args.rounds} (median)")
    for label, median, rounds in (
        ("without processor", base, without),
        ("with processor", cpu, with_cpu),
    ):
        each = " ".join(f"{value:.0f}" for value in rounds)
        print(f"{label:>20}  {median:8.0f} CPU ns/span   rounds: {each}")
    print(f"{'processor costs':>20}  {cpu - base:8.0f} CPU ns/span")


if __name__ == "__main__":
    main()
