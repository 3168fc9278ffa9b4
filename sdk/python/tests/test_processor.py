"""What ``cpu.time_ns`` says, and where it is left out, seen by an exporter as Bottleneck gets it.

The bounds are loose on purpose: a span that spins for 20 ms of its thread's CPU time has at
least that much whatever else the machine does, and a sleeping span has next to none.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import bottleneck_cputime
import support
from support import MS, burn_cpu


def test_busy_span_gets_its_cpu_time_and_sleeping_span_next_to_none(traced):
    with traced.tracer.start_as_current_span("busy"):
        burn_cpu(20 * MS)
    with traced.tracer.start_as_current_span("asleep"):
        time.sleep(0.05)
    values = traced.cpu_time_ns()
    assert values["busy"] >= 15 * MS
    assert values["asleep"] < 10 * MS


def test_value_includes_the_children(traced):
    with traced.tracer.start_as_current_span("request"):
        burn_cpu(10 * MS)
        with traced.tracer.start_as_current_span("render"):
            with traced.tracer.start_as_current_span("sign"):
                burn_cpu(20 * MS)
    values = traced.cpu_time_ns()
    assert values["sign"] >= 15 * MS
    assert values["render"] >= values["sign"]
    # The request's 10 ms of its own come on top of everything below it.
    assert values["request"] >= values["render"] + 7 * MS


def test_value_is_set_before_a_processor_added_earlier_sees_the_span(traced):
    # The exporter of the fixture was added before the CPU time processor, and it exports in
    # on_end: it has the value, so every later exporter has it too.
    with traced.tracer.start_as_current_span("request"):
        burn_cpu(1 * MS)
    assert traced.cpu_time_ns()["request"] >= 1 * MS


@pytest.mark.parametrize("wrap_on_end", [False, True], ids=["ending hook", "on_end wrapper"])
def test_batch_processor_added_before_exports_the_value(wrap_on_end):
    provider = TracerProvider(resource=Resource.get_empty(), shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    processor = bottleneck_cputime.install(provider)
    if not wrap_on_end and processor._wrap_on_end:
        pytest.skip("this SDK has no _on_ending hook that takes the attribute")
    processor._wrap_on_end = wrap_on_end
    with provider.get_tracer("tests").start_as_current_span("request"):
        burn_cpu(1 * MS)
    provider.shutdown()  # exports what the batch holds
    spans = exporter.get_finished_spans()
    assert [span.attributes["cpu.time_ns"] >= 1 * MS for span in spans] == [True]


@pytest.mark.parametrize("wrap_on_end", [False, True], ids=["ending hook", "on_end wrapper"])
def test_full_attribute_table_keeps_its_attributes_and_gets_no_value(wrap_on_end):
    res = support.traced(SpanLimits(max_span_attributes=2))
    if not wrap_on_end and res.processor._wrap_on_end:
        pytest.skip("this SDK has no _on_ending hook that takes the attribute")
    res.processor._wrap_on_end = wrap_on_end
    for name, attributes in (
        ("full", {"a": 1, "b": 2}),
        ("room for it", {"a": 1}),
        ("set by the application", {"a": 1, "cpu.time_ns": -1}),
    ):
        with res.tracer.start_as_current_span(name, attributes=attributes):
            burn_cpu(1 * MS)
    res.provider.shutdown()
    spans = dict(res.exporter.snapshots)
    # Adding the value would have pushed the oldest attribute out.
    assert spans["full"] == {"a": 1, "b": 2}
    assert spans["room for it"]["cpu.time_ns"] >= 1 * MS
    # Replaced where it is, which takes no room.
    assert spans["set by the application"]["cpu.time_ns"] >= 1 * MS


def test_span_ended_on_another_thread_has_no_value(traced):
    span = traced.tracer.start_span("handed over")
    burn_cpu(1 * MS)
    ender = threading.Thread(target=span.end)
    ender.start()
    ender.join()
    # The record the starting thread kept of it does not spoil the next span there.
    with traced.tracer.start_as_current_span("next request"):
        burn_cpu(1 * MS)
    values = traced.cpu_time_ns()
    assert values["handed over"] is None
    assert values["next request"] >= 1 * MS


def test_span_started_on_another_thread_and_ended_here_has_no_value(traced):
    spans = []
    starter = threading.Thread(
        target=lambda: spans.append(traced.tracer.start_span("from a worker"))
    )
    starter.start()
    starter.join()
    spans[0].end()
    assert traced.cpu_time_ns() == {"from a worker": None}


def test_spans_under_a_running_event_loop_have_no_value(traced):
    async def handler():
        with traced.tracer.start_as_current_span("async request"):
            burn_cpu(1 * MS)
            await asyncio.sleep(0)

    asyncio.run(handler())
    assert traced.cpu_time_ns() == {"async request": None}


def test_interleaved_spans_of_two_traces_on_one_thread_have_no_value(traced):
    first = traced.tracer.start_span("first request", context=context_api.Context())
    second = traced.tracer.start_span("second request", context=context_api.Context())
    assert first.get_span_context().trace_id != second.get_span_context().trace_id
    burn_cpu(1 * MS)
    first.end()
    second.end()
    assert traced.cpu_time_ns() == {"first request": None, "second request": None}


def test_other_trace_started_inside_a_span_leaves_both_out(traced):
    # Nested in time is not enough: the thread cannot tell whose work it ran in between.
    with traced.tracer.start_as_current_span("request"):
        with traced.tracer.start_as_current_span("background", context=context_api.Context()):
            burn_cpu(1 * MS)
    assert traced.cpu_time_ns() == {"background": None, "request": None}


def test_overlapping_siblings_are_left_out_but_their_parent_is_not(traced):
    with traced.tracer.start_as_current_span("request") as request:
        parent = trace.set_span_in_context(request)
        first = traced.tracer.start_span("first", context=parent)
        second = traced.tracer.start_span("second", context=parent)
        burn_cpu(1 * MS)
        first.end()
        second.end()
    values = traced.cpu_time_ns()
    assert values["first"] is None and values["second"] is None
    assert values["request"] >= 1 * MS


def test_threads_measure_their_own_spans(traced):
    def request(name: str) -> None:
        with traced.tracer.start_as_current_span(name):
            burn_cpu(20 * MS)

    workers = [threading.Thread(target=request, args=(f"request {n}",)) for n in range(3)]
    for worker in workers:
        worker.start()
    with traced.tracer.start_as_current_span("main thread"):
        time.sleep(0.05)
    for worker in workers:
        worker.join()
    values = traced.cpu_time_ns()
    assert all(values[f"request {n}"] >= 15 * MS for n in range(3))
    assert values["main thread"] < 10 * MS


def test_spans_in_a_greenlet_have_no_value(traced):
    greenlet = pytest.importorskip("greenlet")

    def handler():
        with traced.tracer.start_as_current_span("in a greenlet"):
            burn_cpu(1 * MS)

    greenlet.greenlet(handler).switch()
    with traced.tracer.start_as_current_span("main greenlet"):
        burn_cpu(1 * MS)
    values = traced.cpu_time_ns()
    assert values["in a greenlet"] is None
    assert values["main greenlet"] >= 1 * MS


GEVENT_SCRIPT = """
from gevent import monkey
monkey.patch_all()
import time
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import bottleneck_cputime

provider = TracerProvider(resource=Resource.get_empty())
exporter = InMemorySpanExporter()
provider.add_span_processor(SimpleSpanProcessor(exporter))
bottleneck_cputime.install(provider)
with provider.get_tracer("gevent").start_as_current_span("main greenlet"):
    time.sleep(0.001)
print([span.attributes.get("cpu.time_ns") for span in exporter.get_finished_spans()])
"""


def test_gevent_monkey_patching_leaves_every_span_out():
    pytest.importorskip("gevent")
    # Monkey patching cannot be undone, so it happens in a process of its own.
    out = subprocess.run(
        [sys.executable, "-c", GEVENT_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[None]"


def _no_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(time, "thread_time_ns")


def _failing_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    def thread_time_ns() -> int:
        raise OSError("no thread CPU clock")

    monkeypatch.setattr(time, "thread_time_ns", thread_time_ns)


@pytest.mark.parametrize("take_clock_away", [_no_clock, _failing_clock], ids=["missing", "raising"])
def test_without_a_thread_clock_nothing_is_measured(monkeypatch, take_clock_away):
    take_clock_away(monkeypatch)
    res = support.traced()
    assert not res.processor.enabled
    with res.tracer.start_as_current_span("request"):
        burn_cpu_by_wall_clock(1 * MS)
    assert res.cpu_time_ns() == {"request": None}


def burn_cpu_by_wall_clock(wall_ns: int) -> None:
    until = time.perf_counter_ns() + wall_ns
    while time.perf_counter_ns() < until:
        pass


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_span_open_across_a_fork_has_no_value_in_the_child(traced):
    span = traced.tracer.start_span("open across the fork")
    burn_cpu(5 * MS)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        # The child's thread clock starts at zero: the parent's start reading means nothing here.
        try:
            span.end()
            with traced.tracer.start_as_current_span("child's own"):
                burn_cpu(1 * MS)
            os.write(write_end, json.dumps(traced.cpu_time_ns()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        in_child = json.loads(pipe.read())
    os.waitpid(pid, 0)
    span.end()
    assert in_child["open across the fork"] is None
    assert in_child["child's own"] >= 1 * MS
    assert traced.cpu_time_ns()["open across the fork"] >= 5 * MS
