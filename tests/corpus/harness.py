"""What the corpus drivers share: the OTLP/HTTP capture server, the stub HTTP services the apps
call, starting and stopping the apps' processes, and the run itself (`drive`), from the
services' check to the fixtures.

The capture server stores every `POST /v1/traces` body, in the order the bodies arrive, as
`export-NNNN.pb` (a protobuf `ExportTraceServiceRequest`, gunzipped if the exporter compressed
it) and answers 200 with an empty `ExportTraceServiceResponse`. Metrics and logs are answered the
same way and not kept. The stub services answer each path after that path's delay, so an app's
outgoing calls take a known, real time.

The servers need only the standard library; the run needs the corpus's Python requirements
(python/requirements.txt): psycopg2, redis and kombu for the run's schema, keys and queue,
opentelemetry-proto to read the exports back (expect.py).

Invariant: every server listens on an ephemeral port of 127.0.0.1; every wait has a timeout; a
process started here stops when its standard input closes, so none outlives the driver.
"""

import argparse
import gzip
import http.client
import json
import os
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import expect

#: How long a process may take to say it is ready, and to export what it holds and exit.
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 60


class Capture(ThreadingHTTPServer):
    """An OTLP/HTTP receiver that keeps each trace export's body as a file in `out_dir`."""

    daemon_threads = True

    def __init__(self, out_dir):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.n_exports = 0
        self.n_bytes = 0
        super().__init__(("127.0.0.1", 0), CaptureHandler)

    def keep(self, body):
        with self.lock:
            self.n_exports += 1
            self.n_bytes += len(body)
            path = self.out_dir / f"export-{self.n_exports:04}.pb"
            path.write_bytes(body)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class CaptureHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = read_body(self)
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        if self.path.rstrip("/") == "/v1/traces":
            self.server.keep(body)
        # An empty ExportTraceServiceResponse is zero bytes of protobuf.
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def read_body(handler):
    """The request's body, sent with a Content-Length or chunked (as Node's exporter sends it)."""
    if handler.headers.get("Transfer-Encoding", "").lower() != "chunked":
        return handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
    body = b""
    while True:
        size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
        chunk = handler.rfile.read(size + 2)
        if size == 0:
            return body
        body += chunk[:-2]


class Stub(ThreadingHTTPServer):
    """The services the apps call: each path in `delays_s` answers JSON after its delay."""

    daemon_threads = True

    def __init__(self, delays_s):
        self.delays_s = dict(delays_s)
        super().__init__(("127.0.0.1", 0), StubHandler)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        read_body(self)
        delay_s = self.server.delays_s.get(self.path)
        if delay_s is None:
            status, body = 404, b'{"error":"not found"}'
        else:
            time.sleep(delay_s)
            status, body = 200, json.dumps({"ok": True, "path": self.path}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer

    def log_message(self, *args):
        pass


def serve(server):
    """Runs `server` on a daemon thread and returns it."""
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server


def clean_env(**settings):
    """The driver's environment without the caller's OTEL_* settings (they would change what is
    captured), plus `settings`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update({key: str(value) for key, value in settings.items()})
    return env


def start(command, env, cwd, ready_word):
    """Starts `command`; returns the process and the rest of the first stdout line that begins
    with `ready_word` (a port, say). Standard input stays open: closing it stops the process."""
    proc = subprocess.Popen(
        command, env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{command[-1]} exited before it was ready (status {proc.wait()})")
            if line.startswith(ready_word):
                return proc, line[len(ready_word):].strip()
        raise RuntimeError(f"{command[-1]} was not ready within {START_TIMEOUT_S} s")
    except BaseException:
        kill(proc)
        raise
    finally:
        selector.close()


def stop(proc, name):
    """SIGTERM, then the exit that the SDK delays until it has exported what it holds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        status = proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill(proc)
        raise RuntimeError(f"{name} did not exit within {STOP_TIMEOUT_S} s of SIGTERM")
    finally:
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
    if status != 0:
        raise RuntimeError(f"{name} exited with status {status}")


def kill(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def request(port, method, path):
    """One request to the app, which must answer with a success."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=b"" if method == "POST" else None)
        response = connection.getresponse()
        body = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path} answered {response.status}: {body[:200]!r}")
    finally:
        connection.close()


def unreachable(dsn, redis_url, broker_url):
    """None if PostgreSQL, Redis and RabbitMQ all answer, else what does not."""
    import psycopg2
    import redis
    from kombu import Connection

    try:
        psycopg2.connect(dsn, connect_timeout=5).close()
        redis.Redis.from_url(redis_url, socket_timeout=5).ping()
        with Connection(broker_url, connect_timeout=5) as broker:
            broker.connect()
    except Exception as err:  # noqa: BLE001: any failure here means "not reachable"
        return f"{type(err).__name__}: {str(err).strip()}"
    return None


def remove_queue_and_keys(broker_url, queue, redis_url, key_prefix):
    """The run's RabbitMQ queue (and the exchange of the same name that Celery declares) and
    Redis keys, removed; a failure is reported, not raised."""
    import redis
    from kombu import Connection

    try:
        with Connection(broker_url, connect_timeout=5) as broker:
            broker.default_channel.queue_delete(queue)
            # RabbitMQ deletes an exchange that is not there without complaint.
            broker.default_channel.exchange_delete(queue)
    except Exception as err:  # noqa: BLE001: clean-up goes on
        print(f"could not delete queue {queue}: {err}", file=sys.stderr)
    try:
        cache = redis.Redis.from_url(redis_url, socket_timeout=5)
        for key in cache.scan_iter(match=f"{key_prefix}:*"):
            cache.delete(key)
    except Exception as err:  # noqa: BLE001: clean-up goes on
        print(f"could not delete the keys {key_prefix}:*: {err}", file=sys.stderr)


def wait_until(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout_s} s")
        time.sleep(0.05)


def read_jsonl(path):
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, sort_keys=True) + "\n")


def keep_fixtures(out_dir, capture_dir, records, expected):
    """Replaces the fixtures in `out_dir` with this run's."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("export-*.pb"):
        old.unlink()
    for export in sorted(Path(capture_dir).glob("export-*.pb")):
        (out_dir / export.name).write_bytes(export.read_bytes())
    write_jsonl(out_dir / "truth.jsonl", records)
    (out_dir / "expect.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n", encoding="utf-8")


class Run:
    """One run of a driver: its names (schema, queue, key prefix), its servers, its files."""

    def __init__(self, args, truth_dir, capture, stub):
        self.args = args
        self.run_id = secrets.token_hex(4)
        self.schema = f"corpus_{self.run_id}"
        self.queue = f"corpus_{self.run_id}"
        self.key_prefix = f"corpus-{self.run_id}"
        self.truth_dir = Path(truth_dir)
        self.capture = capture
        self.stub = stub

    def records(self):
        """What every process has written so far."""
        return [record for path in sorted(self.truth_dir.glob("*.jsonl")) for record in read_jsonl(path)]


def arguments(description, default_out):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=default_out, help="the fixtures' folder")
    parser.add_argument("--requests", type=int, default=5, help="requests per endpoint")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--mariadb", default="mysql://root@127.0.0.1:3306", help="MariaDB (the Node shop's stock)")
    return parser.parse_args()


#: The exit status that tells the caller a service (PostgreSQL, Redis, RabbitMQ) is not there.
EXIT_UNREACHABLE = 77
#: How long the last records may take to be written once the last request was answered.
SETTLE_TIMEOUT_S = 60


#: The stub services' answer times: a slow carrier API that the request waits for, and a
#: notification hook that answers long after the request that fired it has ended. The carrier's
#: delay makes the traffic outlast the SDK's first 5 s export, which then falls, most likely,
#: between a shipment's statements and the end of its request: a root that arrives late.
STUB_DELAYS_S = {"/carrier/labels": 1.200, "/hooks/notify": 0.150}
#: The requests of one round, the same for both shops, in order: (method, path of round `n`).
#: Cache-aside reads products 1, 2, 1, 3, 2: misses, then hits.
PRODUCTS = [1, 2, 1, 3, 2]
ROUND = [
    ("GET", lambda n: f"/orders/{n % 5 + 1}/lines"),
    ("GET", lambda n: "/reports/open-orders"),
    ("POST", lambda n: "/orders/open/touch"),
    ("GET", lambda n: f"/products/{PRODUCTS[n % len(PRODUCTS)]}"),
    ("POST", lambda n: f"/orders/{n % 5 + 1}/notify"),
    ("POST", lambda n: f"/orders/{n % 5 + 1}/ship"),
    ("GET", lambda n: "/health"),
]


def drive(app, args, intent, start, extra_round=(), databases=None):
    """The run both drivers make. `start(run)` starts the app's processes and returns them as
    [(name, process)], the web app last, and the web app's port; then `args.requests` rounds of
    ROUND and the app's `extra_round` are sent, one request at a time, each round publishing one
    message that a consumer handles. Once every record is written the processes are stopped,
    the web app first, and the fixtures are written to args.out. `databases`, when given, is a
    pair of callables that make and remove the run's databases beyond PostgreSQL's schema
    (`databases[0](run)` before the app starts, `databases[1](run)` on every way out). Returns
    the exit status."""
    import psycopg2

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    missing = unreachable(args.dsn, args.redis, args.broker)
    if missing is not None:
        print(f"a service is not reachable: {missing}", file=sys.stderr)
        return EXIT_UNREACHABLE
    admin = psycopg2.connect(args.dsn, connect_timeout=5)
    admin.autocommit = True
    with tempfile.TemporaryDirectory() as tmp:
        capture_dir, truth_dir = Path(tmp) / "exports", Path(tmp) / "truth"
        truth_dir.mkdir()
        capture = serve(Capture(capture_dir))
        stub = serve(Stub(STUB_DELAYS_S))
        run = Run(args, truth_dir, capture, stub)
        procs = []
        round_ = ROUND + list(extra_round)
        try:
            with admin.cursor() as cursor:
                cursor.execute(f"CREATE SCHEMA {run.schema}")
            if databases is not None:
                databases[0](run)
            procs, port = start(run)
            for n in range(args.requests):
                for method, path in round_:
                    request(port, method, path(n))

            def settled():
                kinds = [record["kind"] for record in run.records()]
                return kinds.count("request") == args.requests * len(round_) and kinds.count("consumer") == args.requests

            wait_until(settled, SETTLE_TIMEOUT_S, "every request's and message's record")
            while procs:
                name, proc = procs.pop()
                stop(proc, name)
        finally:
            for _, proc in procs:
                kill(proc)
            for server in (capture, stub):
                server.shutdown()
                server.server_close()
            remove_queue_and_keys(args.broker, run.queue, args.redis, run.key_prefix)
            with admin.cursor() as cursor:
                cursor.execute(f"DROP SCHEMA IF EXISTS {run.schema} CASCADE")
            admin.close()
            if databases is not None:
                databases[1](run)
        spans = expect.captured_spans(capture_dir)
        records = expect.name_endpoints(run.records(), spans)
        expected = expect.expectations(app, records, spans, intent)
        keep_fixtures(args.out, capture_dir, records, expected)
    report = {"bytes": capture.n_bytes, **expected["capture"], "example_traces": expect.examples(spans, records)}
    print(json.dumps(report, indent=1))
    return 0
