"""Runs the Python shop (app.py and its Celery worker, worker.py) under `opentelemetry-instrument`,
sends it a fixed set of requests, and keeps what the SDK exported and what the shop counted of
itself as the corpus's fixtures.

usage: drive.py [--out DIR] [--requests N] [--dsn DSN] [--redis URL] [--broker URL]

Everything listens on ephemeral ports of 127.0.0.1: the OTLP capture server and the stub services
(harness.py), the app; the worker listens on nothing. The run has a schema of its own in
PostgreSQL, its own Redis key prefix and its own RabbitMQ queue, all removed at the end. The
batch span processor keeps its default 5 s delay, so some requests' spans reach the capture
server before their root does, as they do in production.

Written to DIR (default: ../fixtures/python), replacing what was there, only when the run
succeeded: export-NNNN.pb (each export as received), truth.jsonl (one line per request, task and
start-up, sorted by start), expect.json (what a correct analysis must say, derived from the
truth). A summary of the span shapes seen goes to stdout.
Exit status: 0 done, 77 a service (PostgreSQL, Redis, RabbitMQ) is not reachable, 1 otherwise.

Invariant: the app and the worker never outlive the driver (they stop when their standard input
closes); the schema, keys and queue are removed on every way out but SIGKILL.
"""

import shutil
import sys
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import harness  # noqa: E402

SERVICE = "corpus-py"
#: What each endpoint is built to show that the statement counts alone do not: checks an
#: analysis must pass beyond the ones derived from the truth (see expect.expectations).
INTENT = {
    "GET /products/<int:product_id>": {"sequential_io": "must_not"},
    "POST /orders/open/touch": {"sequential_io": "must_not"},
    "GET /health": {"cpu_hot_spot": "must_not"},
}


def instrument_command():
    beside = Path(sys.executable).parent / "opentelemetry-instrument"
    if beside.exists():
        return str(beside)
    found = shutil.which("opentelemetry-instrument")
    if found is None:
        raise SystemExit("opentelemetry-instrument is not installed (pip install -r requirements.txt)")
    return found


def start(run):
    common = dict(
        OTEL_SERVICE_NAME=SERVICE,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=run.capture.url,
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        # Only the SDK's own resource attributes: no detector looks beyond this process.
        OTEL_EXPERIMENTAL_RESOURCE_DETECTORS="otel",
        CORPUS_DSN=run.args.dsn,
        CORPUS_SCHEMA=run.schema,
        CORPUS_REDIS_URL=run.args.redis,
        CORPUS_BROKER_URL=run.args.broker,
        CORPUS_QUEUE=run.queue,
        CORPUS_KEY_PREFIX=run.key_prefix,
        CORPUS_STUB_URL=run.stub.url,
        PYTHONUNBUFFERED="1",
    )
    procs = []
    try:
        # Web and worker share a service name, as one deployment's processes often do; each
        # process has an instance id of its own.
        worker_env = harness.clean_env(
            **common,
            OTEL_RESOURCE_ATTRIBUTES=f"service.instance.id={uuid.uuid4()}",
            CORPUS_PROCESS="worker",
            CORPUS_TRUTH=run.truth_dir / "worker.jsonl",
        )
        worker_command = [
            instrument_command(), sys.executable, "-m", "celery", "-A", "worker", "worker",
            "--pool=solo", "--concurrency=1", "--without-mingle", "--without-gossip",
            "--without-heartbeat", "--loglevel=WARNING",
        ]
        worker, _ = harness.start(worker_command, worker_env, HERE, "ready")
        procs.append(("worker", worker))
        web_env = harness.clean_env(
            **common,
            OTEL_RESOURCE_ATTRIBUTES=f"service.instance.id={uuid.uuid4()}",
            CORPUS_PROCESS="web",
            CORPUS_TRUTH=run.truth_dir / "web.jsonl",
        )
        web, port = harness.start([instrument_command(), sys.executable, "app.py"], web_env, HERE, "listening")
        procs.append(("app", web))
        return procs, int(port)
    except BaseException:
        for _, proc in procs:
            harness.kill(proc)
        raise


def main():
    args = harness.arguments(__doc__.splitlines()[0], HERE.parent / "fixtures" / "python")
    return harness.drive("python", args, INTENT, start)


if __name__ == "__main__":
    sys.exit(main())
