"""Sets ``cpu.time_ns`` on OpenTelemetry spans: the CPU time of the span's thread between the
span's start and its end, its children included, so that Bottleneck can split a span's self time
into ``cpu`` and ``wait``.

``opentelemetry-instrument`` switches it on through the ``bottleneck_cputime`` entry point; code
that sets up the SDK itself calls :func:`install`.

Invariant: this package never sets or replaces the global TracerProvider and never exports; it
only adds its processor to an SDK provider that exists.
"""

from __future__ import annotations

import threading
import weakref

from opentelemetry import trace

from .processor import ATTRIBUTE, CpuTimeSpanProcessor

__all__ = ["ATTRIBUTE", "CpuTimeSpanProcessor", "install"]

# One processor per provider: a second one would see the first one's spans as interleaved.
_installed: weakref.WeakKeyDictionary[object, CpuTimeSpanProcessor] = weakref.WeakKeyDictionary()
_installed_lock = threading.Lock()


def install(tracer_provider: trace.TracerProvider | None = None) -> CpuTimeSpanProcessor:
    """Adds the processor to ``tracer_provider`` (the global one by default) and returns it.

    Installing twice on one provider returns the processor of the first call, switched on.
    Raises ``TypeError`` when the provider is not the SDK's (the global one is a proxy until
    ``trace.set_tracer_provider`` runs).
    """
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    add_span_processor = getattr(provider, "add_span_processor", None)
    if add_span_processor is None:
        raise TypeError(
            "bottleneck_cputime.install needs the SDK's TracerProvider, got "
            f"{type(provider).__name__}: set one with opentelemetry.trace.set_tracer_provider first"
        )
    with _installed_lock:
        processor = _installed.get(provider)
        if processor is None:
            processor = CpuTimeSpanProcessor()
            add_span_processor(processor)
            _installed[provider] = processor
        processor.enabled = True
    return processor
