"""What the tests share: a real SDK TracerProvider whose spans go to an in-memory exporter added
before the CPU time processor, and a workload that spins by the thread's own CPU clock."""

from __future__ import annotations

import time
from typing import NamedTuple

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

import bottleneck_cputime
from bottleneck_cputime.processor import CpuTimeSpanProcessor

MS = 1_000_000


class Traced(NamedTuple):
    provider: TracerProvider
    tracer: Tracer
    exporter: InMemorySpanExporter
    processor: CpuTimeSpanProcessor

    def cpu_time_ns(self) -> dict[str, int | None]:
        """Each finished span's name and its ``cpu.time_ns`` (None when left out)."""
        return {span.name: _attribute(span) for span in self.exporter.get_finished_spans()}


def traced() -> Traced:
    """A provider with no resource detection and no exit handler, exporting into memory."""
    provider = TracerProvider(resource=Resource.get_empty(), shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    # Added first, so it sees each span before the CPU time processor is called at all.
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    processor = bottleneck_cputime.install(provider)
    return Traced(provider, provider.get_tracer("tests"), exporter, processor)


def _attribute(span: ReadableSpan) -> int | None:
    value = (span.attributes or {}).get(bottleneck_cputime.ATTRIBUTE)
    assert value is None or isinstance(value, int)
    return value


def burn_cpu(cpu_ns: int) -> None:
    """Spins until this thread has used ``cpu_ns`` of CPU time, however busy the machine is."""
    until = time.thread_time_ns() + cpu_ns
    while time.thread_time_ns() < until:
        pass
