"""Exports one traced request from the official OpenTelemetry Python SDK to Bottleneck.

A SERVER span wraps a sqlite3 query and an outgoing HTTP call, both recorded by the official
instrumentations, and carries cpu.time_ns measured with time.thread_time_ns(). Prints the trace
id (32 hex digits) once the spans are exported.

usage: interop.py {http|grpc} ENDPOINT TARGET_URL
"""

import sqlite3
import sys
import time

import requests
from opentelemetry import trace
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


def exporter(protocol, endpoint):
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, insecure=True)


def main():
    protocol, endpoint, target = sys.argv[1:4]
    resource = Resource.create({"service.name": f"py-{protocol}", "service.version": "2.0"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter(protocol, endpoint)))
    trace.set_tracer_provider(provider)
    SQLite3Instrumentor().instrument(tracer_provider=provider)
    RequestsInstrumentor().instrument(tracer_provider=provider)
    tracer = trace.get_tracer("interop")

    attributes = {"http.request.method": "GET", "http.route": "/users/{id}", "url.path": "/users/42"}
    with tracer.start_as_current_span("GET /users/{id}", kind=trace.SpanKind.SERVER, attributes=attributes) as span:
        cpu_start = time.thread_time_ns()
        connection = sqlite3.connect(":memory:")
        cursor = connection.cursor()
        cursor.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        cursor.execute("INSERT INTO users (id, name) VALUES (42, 'ada')")
        cursor.execute("SELECT name FROM users WHERE id = ?", (42,))
        cursor.fetchall()
        connection.close()
        requests.get(target, timeout=10).raise_for_status()
        span.set_attribute("cpu.time_ns", time.thread_time_ns() - cpu_start)
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    print(trace_id)


if __name__ == "__main__":
    main()
