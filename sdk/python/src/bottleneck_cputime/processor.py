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

_get_ident = threading.get_ident
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


class _Open:
    """A measured span that has not ended yet, as its thread's stack holds it."""

    __slots__ = ("span", "span_id", "trace_id", "cpu_start_ns", "left_out")

    def __init__(self, span: Span, span_id: int, trace_id: int) -> None:
        self.span = span
        self.span_id = span_id
        self.trace_id = trace_id
        self.cpu_start_ns = 0
        # Set once the thread's CPU time can no longer be this span's alone: a span that is not
        # its descendant started on the thread while it was open, or the process forked.
        self.left_out = False


class CpuTimeSpanProcessor(SpanProcessor):
    """Sets ``cpu.time_ns`` on every span it can measure exactly, as the span ends.

    The value is in place before any processor's ``on_end`` gets its snapshot of the span (a
    ``BatchSpanProcessor`` added earlier included), so the order in which processors were added
    does not matter. Where the SDK calls ``_on_ending`` first (1.40 and later), the value is
    written there; older SDKs have no hook between the last moment the span takes attributes and
    the snapshot, so there the processor wraps the span's ``end`` instead. Which one works is
    tried once, on a span of a private provider, when the processor is made.
    """

    def __init__(self) -> None:
        # None while switched off or where the platform has no thread CPU clock: one test per span.
        self._clock = thread_clock()
        self._wrap_end = not _ending_hook_takes_attribute()
        # Each thread's open measured spans, outermost first. Each one is the descendant of the one
        # below it: a start that breaks that chain leaves the spans it breaks out and drops them.
        # Only the owning thread ever changes its stack.
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
            parent = span.parent
            top = stack[-1]
            if parent is None or top.span_id != parent.span_id or top.trace_id != parent.trace_id:
                interleaved = _drop_non_ancestors(stack, parent)
        if _get_running_loop() is not None or (
            _modules.get("greenlet") is not None and _greenlets_share_thread()
        ):
            # Other tasks run on this thread whenever this one waits, without a span to show it.
            return
        context = span.context
        record = _Open(span, context.span_id, context.trace_id)
        record.left_out = interleaved
        stack.append(record)
        if self._wrap_end:
            _wrap_end(span, record, stack, clock)
        # Last, so that the bookkeeping above is not counted.
        record.cpu_start_ns = clock()

    def _on_ending(self, span: Span) -> None:
        # Called by SDK 1.40 and later on the thread that ends the span, after the span was frozen
        # and before any on_end.
        clock = self._clock
        if clock is None or self._wrap_end:
            return
        cpu_end_ns = clock()
        try:
            stack = self._local.stack
        except AttributeError:
            return  # This thread never started a measured span: it ended one of another thread.
        # The span is usually the innermost open one of its thread.
        record = stack.pop() if stack and stack[-1].span is span else _pop_record(stack, span)
        if record is not None and not record.left_out:
            _write_attribute(span, cpu_end_ns - record.cpu_start_ns, frozen=True)

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def _forget_open_spans(self) -> None:
        """In a forked child the thread CPU clock starts again from zero, so no span that was open
        across the fork can be measured. Only the forking thread lives on in the child."""
        for record in getattr(self._local, "stack", ()):
            record.left_out = True

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _pop_record(stack: list[_Open], span: Span) -> _Open | None:
    """Takes the span's record off this thread's stack; ``None`` where this thread has none."""
    if stack:
        record = stack[-1]
        if record.span is span:
            stack.pop()
            return record
        for idx in range(len(stack) - 2, -1, -1):
            record = stack[idx]
            if record.span is span:
                del stack[idx]
                return record
    return None


def _wrap_end(span: Span, record: _Open, stack: list[_Open], clock: Callable[[], int]) -> None:
    """For SDKs without ``_on_ending``: sets the attribute inside the span's own ``end()``.

    The span still takes attributes then, and no processor has seen it ended. The instance
    attribute is removed when it runs, which also breaks the span -> end -> span reference cycle.
    """
    real_end = span.end

    def end(end_time: int | None = None) -> None:
        cpu_end_ns = clock()
        span.__dict__.pop("end", None)
        # Ended on another thread: that thread's CPU clock says nothing about this span, and the
        # record stays on its own thread's stack until that thread's next unrelated start drops it.
        if _get_ident() == thread_id and _pop_record(stack, span) is record and not record.left_out:
            cpu_time_ns = cpu_end_ns - record.cpu_start_ns
            if not _write_attribute(span, cpu_time_ns, frozen=False):
                span.set_attribute(ATTRIBUTE, cpu_time_ns)
        real_end(end_time)

    thread_id = _get_ident()
    try:
        span.end = end  # type: ignore[method-assign]
    except AttributeError:
        # A span class without an instance dict: there is no way in, so no value.
        record.left_out = True


def _write_attribute(span: Span, cpu_time_ns: int, frozen: bool) -> bool:
    """Puts the value into the span's attribute table directly; False where that is not possible.

    ``set_attribute`` refuses once the span is ending, and before that it validates and copies
    the value under two locks, which costs nearly as much as the two clock reads; an int needs
    none of that. The write is done only while the table is the SDK's ``BoundedAttributes`` as
    known and has room (a full table would have to drop another attribute, so the value is left
    out instead). A ``frozen`` span has no other writer: ``end()`` set its end time under the lock
    that every ``set_attribute`` takes and checks it under, so no lock is needed then.
    """
    try:
        attributes = span._attributes  # type: ignore[attr-defined]
        table, maxlen = attributes._dict, attributes.maxlen
    except AttributeError:
        return False
    if not isinstance(table, dict):
        return False
    if frozen:
        if maxlen is None or len(table) < maxlen or ATTRIBUTE in table:
            table[ATTRIBUTE] = cpu_time_ns
            return True
        return False
    with attributes._lock:
        if not attributes._immutable and (
            maxlen is None or len(table) < maxlen or ATTRIBUTE in table
        ):
            table[ATTRIBUTE] = cpu_time_ns
            return True
    return False


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
            _write_attribute(span, 1, frozen=True)

        def on_end(self, span: ReadableSpan) -> None:
            seen.append((span.attributes or {}).get(ATTRIBUTE))

    provider = TracerProvider(
        sampler=ALWAYS_ON, resource=Resource.get_empty(), shutdown_on_exit=False
    )
    provider.add_span_processor(Probe())
    provider.get_tracer(__name__).start_span("bottleneck_cputime.probe").end()
    return seen == [1]


def _drop_non_ancestors(stack: list[_Open], parent: SpanContext | None) -> bool:
    """Marks and drops the open spans of the thread that are not ancestors of a starting span, and
    tells whether there was any: then the two requests' work may alternate on the thread, and the
    starting span's value would hold the other's CPU time as much as the other way round.

    An ancestor is proven only through the chain of open spans on this thread; a parent that is
    not among them (a remote parent, a parent on another thread, another trace) proves nothing,
    so every open span counts as interleaved then: a missing value rather than a wrong one. A
    span that has ended meanwhile on another thread is dropped without counting.
    """
    keep = 0
    if parent is not None:
        for idx in range(len(stack) - 1, -1, -1):
            record = stack[idx]
            if record.span_id == parent.span_id and record.trace_id == parent.trace_id:
                keep = idx + 1
                break
    interleaved = False
    for record in stack[keep:]:
        record.left_out = True
        if record.span.end_time is None:
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
