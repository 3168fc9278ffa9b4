"""The span processor that sets ``cpu.time_ns``: the CPU time that the span's thread consumed
between the span's start and its end, the span's children included.

Bottleneck subtracts the children's values itself, so the inclusive figure is the one meaning of
the attribute, whatever the language.

Invariant: it never sets a number that could be wrong. Where other work than the span's own could
have run on the thread while the span was open (an asyncio event loop, greenlets, a span of
another request started on the thread), where the span ended on another thread than it started
on, or where the platform has no per-thread CPU clock, the attribute is left out rather than
estimated. It never blocks, never raises into the application and never changes another thread's
state.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref

# The C function behind asyncio.get_running_loop(), which answers None instead of raising.
from asyncio import _get_running_loop
from typing import Callable

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanContext

#: The span attribute, an int of nanoseconds.
ATTRIBUTE = "cpu.time_ns"

_modules = sys.modules


def thread_clock() -> Callable[[], int] | None:
    """The per-thread CPU clock, or ``None`` where the platform has none that works."""
    clock = getattr(time, "thread_time_ns", None)
    if clock is None:
        return None
    try:
        clock()
    except OSError:
        # CPython raises OSError when clock_gettime(CLOCK_THREAD_CPUTIME_ID) or its
        # equivalent fails.
        return None
    return clock


class CpuTimeSpanProcessor(SpanProcessor):
    """Sets ``cpu.time_ns`` on every span it can measure exactly, as the span ends.

    The value is in place before any processor's ``on_end`` gets its snapshot of the span (a
    ``BatchSpanProcessor`` added earlier included), so the order in which processors were added
    does not matter. Where the SDK calls ``_on_ending`` first (1.40 and later), the value is
    written there; older SDKs have no such hook, so there each measured span is handed a wrapper
    of its provider's span processor, whose ``on_end`` writes the value before it passes the span
    on. Which one works is tried once, on a span of a private provider, when the processor is
    made.
    """

    def __init__(self) -> None:
        # None while switched off or where the platform has no thread CPU clock: one test per span.
        self._clock = thread_clock()
        self._wrap_on_end = not _ending_hook_takes_attribute()
        # The wrapper handed to spans of SDKs without _on_ending. One serves every span of a
        # provider; it is made again only for a span of another provider.
        self._on_end_wrapper: _OnEndWrapper | None = None
        # Each thread's open measured spans, outermost first, each as a tuple of the span and the
        # thread CPU clock's reading at its start, or None where the span is left out (it started
        # interleaved with another request, or was open across a fork). Each one is the
        # descendant of the one below it: a start that breaks that chain leaves the spans it
        # breaks out and drops them. Only the owning thread ever changes its stack. A tuple, not
        # an object with fields: one is made for every span, and a tuple costs a fraction of it.
        self._local = threading.local()
        if hasattr(os, "register_at_fork"):
            # Weak, as the SDK does it: a hook cannot be unregistered, the processor can go away.
            this = weakref.ref(self)

            def after_in_child() -> None:
                processor = this()
                if processor is not None:
                    processor._forget_open_spans()

            os.register_at_fork(after_in_child=after_in_child)

    @property
    def enabled(self) -> bool:
        """Whether spans that start from now on are measured; the SDK cannot remove a processor."""
        return self._clock is not None

    @enabled.setter
    def enabled(self, on: bool) -> None:
        self._clock = thread_clock() if on else None

    # The hot path reads the span's _parent, _context and _end_time rather than their properties,
    # which are Python calls; ReadableSpan has had these attributes since SDK 1.0.
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        clock = self._clock
        if clock is None:
            return
        local = self._local
        try:
            stack = local.stack
        except AttributeError:
            stack = local.stack = []
        interleaved = False
        if stack:
            parent = span._parent
            top = stack[-1][0]._context
            # A parent started through the SDK hands its children its own SpanContext, so the
            # identity test settles the usual case without reading the ids.
            if parent is not top and (
                parent is None or parent.span_id != top.span_id or parent.trace_id != top.trace_id
            ):
                interleaved = _drop_non_ancestors(stack, parent)
        if _get_running_loop() is not None or (
            "greenlet" in _modules and _greenlets_share_thread()
        ):
            # Other tasks run on this thread whenever this one waits, without a span to show it.
            return
        if self._wrap_on_end:
            # The span's end() passes it to span._span_processor, the provider's until now.
            try:
                inner = span._span_processor
                wrapper = self._on_end_wrapper
                if wrapper is None or wrapper.inner is not inner:
                    wrapper = self._on_end_wrapper = _OnEndWrapper(self, inner)
                span._span_processor = wrapper
            except AttributeError:
                # A span of another make: there is no way in, so no value.
                interleaved = True
        # Read last, so that the bookkeeping above is not counted; a span left out needs none.
        stack.append((span, None if interleaved else clock()))

    def _on_ending(self, span: Span | ReadableSpan, wrapped: bool = False) -> None:
        # Called on the thread that ends the span, once it is frozen and before any on_end: by SDK
        # 1.40 and later, or else by the on_end wrapper, with the span's snapshot (which shares
        # the span's attribute table). Where the wrapper is in use on an SDK that has the hook as
        # well (the tests do that), the SDK's call, which comes first, leaves the span to it.
        if self._wrap_on_end and not wrapped:
            return
        try:
            stack = self._local.stack
        except AttributeError:
            return  # This thread never started a measured span: it ended one of another thread.
        # The span is usually the innermost open one of its thread.
        context = span._context
        if stack and stack[-1][0]._context is context:
            cpu_start_ns = stack.pop()[1]
        else:
            cpu_start_ns = _pop_start(stack, context)
        clock = self._clock
        if cpu_start_ns is not None and clock is not None:
            _write_attribute(span, clock() - cpu_start_ns)

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def _forget_open_spans(self) -> None:
        """In a forked child the thread CPU clock starts again from zero, so no span that was open
        across the fork can be measured. Only the forking thread lives on in the child."""
        stack = getattr(self._local, "stack", None)
        if stack:
            stack[:] = [(span, None) for span, _ in stack]

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _pop_start(stack: list[tuple[Span, int | None]], context: SpanContext) -> int | None:
    """Takes the span of ``context`` off this thread's stack and returns its start reading;
    ``None`` where it is left out or not there (it started on another thread, or was dropped as
    interleaved). The SpanContext object is the span's own, and its snapshot's."""
    for idx in range(len(stack) - 1, -1, -1):
        if stack[idx][0]._context is context:
            return stack.pop(idx)[1]
    return None


class _OnEndWrapper:
    """What a span calls in place of its provider's span processor, on SDKs without
    ``_on_ending``: it sets the value, then passes the span on, so that every processor's
    ``on_end`` finds it in place. The span is frozen by then (``end()`` set its end time under
    the lock that every ``set_attribute`` takes and checks it under), and the snapshot that
    ``on_end`` gets shares the span's attribute table.
    """

    __slots__ = ("processor", "inner")

    def __init__(self, processor: CpuTimeSpanProcessor, inner: SpanProcessor) -> None:
        self.processor = processor
        self.inner = inner

    def on_end(self, span: ReadableSpan) -> None:
        self.processor._on_ending(span, wrapped=True)
        self.inner.on_end(span)

    def __getattr__(self, name: str) -> object:
        # Whatever else the span calls (_on_ending, where the SDK has it) is the provider's.
        return getattr(self.inner, name)


def _write_attribute(span: Span | ReadableSpan, cpu_time_ns: int) -> None:
    """Puts the value into the attribute table of an ended span directly, where it has room.

    ``set_attribute`` refuses once the span is ending. Nothing else writes to the table then:
    ``end()`` set the end time under the lock that every ``set_attribute`` takes and checks it
    under, so no lock is needed. A full table would have to drop another attribute, so the value
    is left out then, as it is where the table is not the SDK's ``BoundedAttributes`` as known.
    """
    try:
        attributes = span._attributes  # type: ignore[union-attr]
        table, maxlen = attributes._dict, attributes.maxlen
    except AttributeError:
        return
    if isinstance(table, dict) and (maxlen is None or len(table) < maxlen or ATTRIBUTE in table):
        table[ATTRIBUTE] = cpu_time_ns


def _ending_hook_takes_attribute() -> bool:
    """Whether this SDK calls ``_on_ending`` before the ``on_end`` snapshot, and a value written
    there reaches that snapshot. Tried on a span of a private provider, which exports nothing,
    runs no resource detector and registers no exit handler.
    """
    if not hasattr(SpanProcessor, "_on_ending"):
        return False
    seen: list[object] = []

    class Probe(SpanProcessor):
        def _on_ending(self, span: Span) -> None:
            _write_attribute(span, 1)

        def on_end(self, span: ReadableSpan) -> None:
            seen.append((span.attributes or {}).get(ATTRIBUTE))

    provider = TracerProvider(
        sampler=ALWAYS_ON, resource=Resource.get_empty(), shutdown_on_exit=False
    )
    provider.add_span_processor(Probe())
    provider.get_tracer(__name__).start_span("bottleneck_cputime.probe").end()
    return seen == [1]


def _drop_non_ancestors(stack: list[tuple[Span, int | None]], parent: SpanContext | None) -> bool:
    """Drops the open spans of the thread that are not ancestors of a starting span, and tells
    whether there was any: then the two requests' work may alternate on the thread, and the
    starting span's value would hold the other's CPU time as much as the other way round. A span
    dropped gets no value, as its end no longer finds it.

    An ancestor is proven only through the chain of open spans on this thread; a parent that is
    not among them (a remote parent, a parent on another thread, another trace) proves nothing,
    so every open span counts as interleaved then: a missing value rather than a wrong one. A
    span that has ended meanwhile on another thread is dropped without counting.
    """
    keep = 0
    if parent is not None:
        for idx in range(len(stack) - 1, -1, -1):
            context = stack[idx][0]._context
            if context.span_id == parent.span_id and context.trace_id == parent.trace_id:
                keep = idx + 1
                break
    interleaved = False
    for span, _ in stack[keep:]:
        if span._end_time is None:
            interleaved = True
    del stack[keep:]
    return interleaved


_greenlets_patched = False


def _greenlets_share_thread() -> bool:
    """True when greenlets (gevent, eventlet) may run other requests on this OS thread."""
    global _greenlets_patched
    if _greenlets_patched:
        return True
    greenlet = _modules.get("greenlet")
    if greenlet is None:
        return False
    # A greenlet that is not the thread's first one is being scheduled by someone.
    if greenlet.getcurrent().parent is not None:
        return True
    # Monkey-patched threading: even the main greenlet yields to the others when it blocks.
    # Patching cannot be undone in practice, so the answer is kept.
    monkey = _modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        _greenlets_patched = True
    patcher = _modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("thread"):
        _greenlets_patched = True
    return _greenlets_patched
