"""Switching it on: ``opentelemetry-instrument`` with no code change, and ``install()`` in code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry import trace

import bottleneck_cputime
import support
from bottleneck_cputime.instrumentor import CpuTimeInstrumentor
from support import MS, burn_cpu

# The application: it knows nothing of this package. It adds an in-memory exporter next to the
# one the agent configured and writes what that exporter got to the file named in argv[1].
APP = """
import json, sys, time
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))
with trace.get_tracer("app").start_as_current_span("GET /report"):
    until = time.thread_time_ns() + 5_000_000
    while time.thread_time_ns() < until:
        pass
with open(sys.argv[1], "w") as out:
    json.dump([span.attributes.get("cpu.time_ns") for span in exporter.get_finished_spans()], out)
"""


def run_instrumented(tmp_path: Path, disabled: str | None = None) -> tuple[list[int | None], str]:
    """Runs APP under ``opentelemetry-instrument``: the spans' ``cpu.time_ns``, and what the
    agent's console exporter printed."""
    app = tmp_path / "app.py"
    app.write_text(APP)
    result = tmp_path / "spans.json"
    env = dict(os.environ)
    env.update(
        OTEL_SERVICE_NAME="report",
        # The console exporter, so that nothing is sent anywhere; no resource detector looks
        # beyond this machine.
        OTEL_TRACES_EXPORTER="console",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPERIMENTAL_RESOURCE_DETECTORS="otel",
    )
    env.pop("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", None)
    if disabled is not None:
        env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = disabled
    agent = Path(sys.executable).with_name("opentelemetry-instrument")
    out = subprocess.run(
        [str(agent), sys.executable, str(app), str(result)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert '"name": "GET /report"' in out.stdout
    return json.loads(result.read_text()), out.stdout


def test_opentelemetry_instrument_switches_it_on(tmp_path):
    values, console = run_instrumented(tmp_path)
    assert len(values) == 1 and values[0] is not None and values[0] >= 4 * MS
    # The agent's batch processor, added before this package's, exported the value as well.
    assert '"cpu.time_ns": ' in console


def test_disabled_instrumentations_switch_it_off(tmp_path):
    values, console = run_instrumented(tmp_path, disabled="requests, bottleneck_cputime")
    assert values == [None]
    assert "cpu.time_ns" not in console


def test_install_twice_adds_one_processor():
    res = support.traced()
    assert bottleneck_cputime.install(res.provider) is res.processor
    with res.tracer.start_as_current_span("request"):
        with res.tracer.start_as_current_span("query"):
            burn_cpu(1 * MS)
    # A second processor would have taken the first one's records for another request's.
    assert all(value is not None for value in res.cpu_time_ns().values())


def test_install_without_an_sdk_provider_says_so():
    with pytest.raises(TypeError, match="TracerProvider"):
        bottleneck_cputime.install(trace.NoOpTracerProvider())


def test_uninstrument_switches_the_processor_off_and_instrument_on_again():
    res = support.traced()
    instrumentor = CpuTimeInstrumentor()
    try:
        instrumentor.instrument(tracer_provider=res.provider)
        instrumentor.uninstrument()
        with res.tracer.start_as_current_span("after uninstrument"):
            burn_cpu(1 * MS)
        instrumentor.instrument(tracer_provider=res.provider)
        with res.tracer.start_as_current_span("instrumented again"):
            burn_cpu(1 * MS)
    finally:
        # The instrumentor is a singleton: leave it as the next test expects to find it.
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    values = res.cpu_time_ns()
    assert values["after uninstrument"] is None
    assert values["instrumented again"] >= 1 * MS
