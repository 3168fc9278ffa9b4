"""What the tests share: a real SDK TracerProvider whose spans go to an in-memory exporter added
before the CPU time processor, and a workload that spins by the thread's own CPU clock."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

import bottleneck_cputime
from bottleneck_cputime.processor import CpuTimeSpanProcessor

MS = 1_000_000


class SnapshotExporter(InMemorySpanExporter):
    """Keeps each span's attributes as they were when it was exported. A span's attributes stay
    a live view of its table, but an exporter may serialize the span right away: a value set
    only after the exporter's on_end would not reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.snapshots: list[tuple[str, dict[str, object]]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.snapshots += [(span.name, dict(span.attributes or {})) for span in spans]
        return super().export(spans)


class Traced(NamedTuple):
    provider: TracerProvider
    tracer: Tracer
    exporter: SnapshotExporter
    processor: CpuTimeSpanProcessor

    def cpu_time_ns(self) -> dict[str, int | None]:
        """Each finished span's name and its ``cpu.time_ns`` when exported (None when left
        out)."""
        return {name: _attribute(attributes) for name, attributes in self.exporter.snapshots}


def traced(span_limits: SpanLimits | None = None) -> Traced:
    """A provider with no resource detection and no exit handler, exporting into memory."""
    provider = TracerProvider(
        resource=Resource.get_empty(), shutdown_on_exit=False, span_limits=span_limits
    )
    exporter = SnapshotExporter()
    # Added first, so it sees each span before the CPU time processor is called at all.
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    processor = bottleneck_cputime.install(provider)
    return Traced(provider, provider.get_tracer("tests"), exporter, processor)


def _attribute(attributes: dict[str, object]) -> int | None:
    value = attributes.get(bottleneck_cputime.ATTRIBUTE)
    assert value is None or isinstance(value, int)
    return value


def burn_cpu(cpu_ns: int) -> None:
    """Spins until this thread has used ``cpu_ns`` of CPU time, however busy the machine is."""
    until = time.thread_time_ns() + cpu_ns
    while time.thread_time_ns() < until:
        pass
