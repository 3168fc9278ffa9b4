"""The ``opentelemetry_instrumentor`` entry point: ``opentelemetry-instrument`` loads it after the
SDK's configurator has set the global TracerProvider, and it adds the CPU time processor there.

Invariant: it instruments no library and never fails the application's start: without an SDK
provider (``OTEL_SDK_DISABLED``, no configurator) it does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from . import install
from .processor import CpuTimeSpanProcessor

_logger = logging.getLogger(__name__)


class CpuTimeInstrumentor(BaseInstrumentor):
    """Adds :class:`CpuTimeSpanProcessor` to the global (or the given) SDK TracerProvider."""

    _processor: CpuTimeSpanProcessor | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        # It instruments the SDK, not a library, so there is nothing to check for.
        return []

    def _instrument(self, **kwargs: Any) -> None:
        provider = kwargs.get("tracer_provider") or trace.get_tracer_provider()
        if not hasattr(provider, "add_span_processor"):
            _logger.debug(
                "no SDK TracerProvider (%s): cpu.time_ns is not measured", type(provider).__name__
            )
            return
        self._processor = install(provider)

    def _uninstrument(self, **kwargs: Any) -> None:
        # The SDK cannot remove a span processor, so it is switched off instead.
        if self._processor is not None:
            self._processor.enabled = False
