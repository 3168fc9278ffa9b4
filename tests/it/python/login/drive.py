"""Runs the login service (app.py) under `opentelemetry-instrument`, version 1.0 and then 1.1,
sends it sequential logins and prints what the service measured of itself, as JSON.

usage: drive.py OTLP_HTTP_URL [--cpu] [--requests N] [--dsn DSN] [--records FILE]

The driver creates a schema of its own in PostgreSQL (dropped at the end), starts the identity
provider (an HTTP server that answers after IDP_DELAY_S) and the slow metadata server (a TCP
server that answers after SLOW_DELAY_S) on ephemeral ports of 127.0.0.1, in this process and
without instrumentation, and starts the app once per version with the spans going to
OTLP_HTTP_URL. `--cpu` lets the bottleneck-cputime package set `cpu.time_ns`; without it the
package, if installed, is switched off, so one environment serves both runs. Each app is stopped
with SIGTERM and must exit 0, which it does after the SDK exported what it held.

stdout: {"sign_rounds": .., "versions": {"1.0": Summary, "1.1": Summary}}, where Summary has
`requests`, `trace_ids`, and per-request means in milliseconds (see `summarize`). `--records`
also keeps each request's raw measurements.
Exit status: 0 done, 77 PostgreSQL is not reachable (the caller decides whether that skips),
1 anything else.

Invariant: everything listens and connects on 127.0.0.1 only; every wait has a timeout; the app
never outlives the driver, and the schema is dropped on every way out but SIGKILL.
"""

import argparse
import hashlib
import http.client
import importlib.util
import json
import os
import secrets
import selectors
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg2

HERE = Path(__file__).resolve().parent
#: The identity provider's time to answer: a real network call's order of magnitude.
IDP_DELAY_S = 0.030
#: The metadata server's time to answer: the hidden round trip of version 1.1.
SLOW_DELAY_S = 0.300
#: CPU time of the SAML signature; the rounds are calibrated once, so both versions do the same.
SIGN_CPU_S = 0.010
#: How long the app may take to start, to answer one login, and to export and exit.
START_TIMEOUT_S = 60
LOGIN_TIMEOUT_S = 30
STOP_TIMEOUT_S = 60
#: The exit status that tells the caller PostgreSQL is not there.
EXIT_NO_POSTGRES = 77
EMAIL = "ada@example.com"
PASSWORD = "correct horse battery staple"

SCHEMA_SQL = """
CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE NOT NULL, password_hash text NOT NULL);
CREATE TABLE lockouts (user_id int NOT NULL);
CREATE TABLE orgs (id serial PRIMARY KEY, name text NOT NULL, entity_id text NOT NULL);
CREATE TABLE memberships (user_id int NOT NULL, org_id int NOT NULL, role text NOT NULL);
CREATE TABLE failed_logins (user_id int NOT NULL, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE saml_keys (org_id int NOT NULL, key_material text NOT NULL);
CREATE TABLE user_attributes (user_id int NOT NULL, name text NOT NULL, value text NOT NULL);
CREATE TABLE policy_rules (org_id int NOT NULL, role text NOT NULL, rule text NOT NULL);
CREATE TABLE sessions (id text PRIMARY KEY, user_id int NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
"""


def seed(cursor):
    password_hash = hashlib.sha256(PASSWORD.encode()).hexdigest()
    cursor.execute("INSERT INTO users (email, password_hash) VALUES (%s, %s) RETURNING id", (EMAIL, password_hash))
    (user_id,) = cursor.fetchone()
    cursor.execute("INSERT INTO orgs (name, entity_id) VALUES ('Acme', 'https://sso.acme.test') RETURNING id")
    (org_id,) = cursor.fetchone()
    cursor.execute("INSERT INTO memberships VALUES (%s, %s, 'admin')", (user_id, org_id))
    cursor.execute("INSERT INTO saml_keys VALUES (%s, %s)", (org_id, secrets.token_hex(32)))
    for name, value in [("department", "engineering"), ("title", "countess"), ("locale", "en-GB")]:
        cursor.execute("INSERT INTO user_attributes VALUES (%s, %s, %s)", (user_id, name, value))
    for rule in ["mfa required", "session max 8h", "ip allowlist office"]:
        cursor.execute("INSERT INTO policy_rules VALUES (%s, 'admin', %s)", (org_id, rule))


class Idp(BaseHTTPRequestHandler):
    """The identity provider: takes a signed assertion, answers with a session id."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(IDP_DELAY_S)
        body = json.dumps({"session": uuid.uuid4().hex}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Slow(socketserver.StreamRequestHandler):
    """The metadata server: one line in, one line out after SLOW_DELAY_S."""

    def handle(self):
        self.rfile.readline()
        time.sleep(SLOW_DELAY_S)
        self.wfile.write(b"ok\n")


class SlowServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(server):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    return server


def sign_rounds():
    """PBKDF2 rounds that take about SIGN_CPU_S of CPU time here (the best of three tries)."""
    probe = 20_000
    best = min(timed_pbkdf2(probe) for _ in range(3))
    return max(1_000, int(probe * SIGN_CPU_S / max(best, 1e-6)))


def timed_pbkdf2(rounds):
    start = time.thread_time()
    hashlib.pbkdf2_hmac("sha256", b"assertion", b"key", rounds)
    return time.thread_time() - start


def instrument_command():
    """`opentelemetry-instrument` of the environment this Python belongs to."""
    beside = Path(sys.executable).parent / "opentelemetry-instrument"
    if beside.exists():
        return str(beside)
    found = shutil.which("opentelemetry-instrument")
    if found is None:
        raise SystemExit("opentelemetry-instrument is not installed (pip install opentelemetry-distro)")
    return found


def app_env(args, version, schema, idp_addr, slow_addr, rounds, truth_path):
    # The caller's own OTEL_* settings would change what is measured: none is passed on.
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    disabled = ["urllib", "urllib3"]
    if not args.cpu:
        disabled.append("bottleneck_cputime")
    env.update(
        OTEL_SERVICE_NAME="login",
        OTEL_RESOURCE_ATTRIBUTES=f"service.version={version}",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=args.otlp_http_url,
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_EXPERIMENTAL_RESOURCE_DETECTORS="otel",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=",".join(disabled),
        LOGIN_DSN=args.dsn,
        LOGIN_SCHEMA=schema,
        LOGIN_IDP_URL=f"http://{idp_addr[0]}:{idp_addr[1]}/saml/sso",
        LOGIN_SLOW_ADDR=f"{slow_addr[0]}:{slow_addr[1]}",
        LOGIN_VERSION=version,
        LOGIN_SIGN_ROUNDS=str(rounds),
        LOGIN_TRUTH=str(truth_path),
        PYTHONUNBUFFERED="1",
    )
    return env


def wait_for_port(proc):
    """The port the app prints once it listens, or an error if it exits or takes too long."""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the app exited before listening (status {proc.wait()})")
            if line.startswith("listening "):
                return int(line.split()[1])
        raise RuntimeError(f"the app did not listen within {START_TIMEOUT_S} s")
    finally:
        selector.close()


def login(port):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=LOGIN_TIMEOUT_S)
    try:
        body = json.dumps({"email": EMAIL, "password": PASSWORD})
        connection.request("POST", "/login", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        text = response.read()
        if response.status != 200:
            raise RuntimeError(f"login answered {response.status}: {text[:200]!r}")
    finally:
        connection.close()


def stop(proc):
    """SIGTERM, then the exit the SDK's exit hook delays until the spans are exported."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        status = proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the app did not exit within {STOP_TIMEOUT_S} s of SIGTERM")
    if status != 0:
        raise RuntimeError(f"the app exited with status {status}")


def run_version(args, version, schema, idp_addr, slow_addr, rounds, truth_path):
    env = app_env(args, version, schema, idp_addr, slow_addr, rounds, truth_path)
    command = [instrument_command(), sys.executable, str(HERE / "app.py")]
    # The app stops when its standard input closes, so it cannot outlive this process.
    proc = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = wait_for_port(proc)
        for _ in range(args.requests):
            login(port)
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()


def bounds(r):
    """What one request's span data can show, per category, as [least, most] in nanoseconds.

    Every window the app timed nests with a span: the handler lies inside the request span and
    the instrumented WSGI call (`outer`) around it; each call's inner window lies inside its span
    and the outer one around it. The instrumentation's own work between those edges is real time
    that the app cannot place on either side of a span's edge, so each category is known to lie
    between two sums, the inner ones and the outer ones:
    - duration: from the handler's wall time to the outer window's;
    - db, network: from the inner windows' wall time to the outer ones';
    - cpu (the request span's own CPU time, its children's taken out): from the handler's CPU
      time less the outer windows' to the outer window's less the inner windows';
    - wait (its own time off the CPU): from the handler's wall time off the CPU outside the
      outer windows to the outer window's outside the inner windows, plus the CPU time before
      the request span started measuring, which can only be in the outer window's part outside
      the handler: that CPU is unmeasured, hence wait;
    - self (cpu and wait together, which is `untraced` without a CPU measurement): from the
      handler's wall time outside the outer windows to the outer window's outside the inner ones.
    """
    calls_wall = r["db_wall_ns"] + r["network_wall_ns"]
    calls_cpu = r["db_cpu_ns"] + r["network_cpu_ns"]
    inner_wall = r["db_inner_wall_ns"] + r["network_inner_wall_ns"]
    inner_cpu = r["db_inner_cpu_ns"] + r["network_inner_cpu_ns"]
    cpu_least = r["handler_cpu_ns"] - calls_cpu
    return {
        "duration_ms": [r["handler_wall_ns"], r["outer_wall_ns"]],
        "db_ms": [r["db_inner_wall_ns"], r["db_wall_ns"]],
        "network_ms": [r["network_inner_wall_ns"], r["network_wall_ns"]],
        "cpu_ms": [cpu_least, r["outer_cpu_ns"] - inner_cpu],
        "wait_ms": [
            r["handler_wall_ns"] - calls_wall - cpu_least,
            r["outer_wall_ns"] - inner_wall - (r["handler_cpu_ns"] - inner_cpu),
        ],
        "self_ms": [r["handler_wall_ns"] - calls_wall, r["outer_wall_ns"] - inner_wall],
    }


def mean(values):
    return sum(values) / len(values) if values else 0.0


def summarize(records):
    """Per-request means, in milliseconds, of what the app measured of one version's requests.

    `hidden_ms` is the wall time of the hidden round trip, `sign_cpu_ms` the CPU time of the
    signature, `stretch_ms` the time between the policy_rules query and the POST (see below), `framework_ms` the outer window less the handler (Flask's and the
    instrumentation's work around the handler), `db_calls` the statements per request. Each of
    duration_ms, db_ms, network_ms, cpu_ms, wait_ms and self_ms is [least, most], the means of
    `bounds`.
    """
    ms = 1e-6
    summary = {
        "requests": len(records),
        "trace_ids": [r["trace_id"] for r in records],
        "db_calls": mean([r["calls"].get("db", 0) for r in records]),
        "hidden_ms": mean([r["hidden_wall_ns"] * ms for r in records]),
        "sign_cpu_ms": mean([r["sign_cpu_ns"] * ms for r in records]),
        "framework_ms": mean([(r["outer_wall_ns"] - r["handler_wall_ns"]) * ms for r in records]),
        # The stretch from the policy_rules query to the identity provider's POST (where 1.1's
        # hidden round trip is): from between the calls' outer windows to between their inner
        # ones, which bound the stretch between their spans.
        "stretch_ms": [
            mean([r["stretch_outer_ns"] * ms for r in records]),
            mean([r["stretch_inner_ns"] * ms for r in records]),
        ],
    }
    per_request = [bounds(r) for r in records]
    for key in per_request[0] if per_request else []:
        summary[key] = [mean([b[key][side] * ms for b in per_request]) for side in (0, 1)]
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("otlp_http_url", help="Bottleneck's OTLP/HTTP base URL")
    parser.add_argument("--cpu", action="store_true", help="let bottleneck-cputime set cpu.time_ns")
    parser.add_argument("--requests", type=int, default=30, help="logins per version")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--records", type=Path, help="also write each request's raw record here (JSON lines)")
    args = parser.parse_args()
    # SIGTERM ends the driver through its clean-up, like an exception.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    if args.cpu and importlib.util.find_spec("bottleneck_cputime") is None:
        raise SystemExit("--cpu needs the bottleneck-cputime package (pip install sdk/python)")

    try:
        admin = psycopg2.connect(args.dsn, connect_timeout=5)
    except psycopg2.OperationalError as err:
        print(f"PostgreSQL is not reachable at {args.dsn}: {str(err).strip()}", file=sys.stderr)
        return EXIT_NO_POSTGRES
    admin.autocommit = True
    schema = f"login_{os.getpid()}_{secrets.token_hex(4)}"
    idp = slow = None
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA {schema}")
            cursor.execute(f"SET search_path TO {schema}")
            cursor.execute(SCHEMA_SQL)
            seed(cursor)
        idp = serve(ThreadingHTTPServer(("127.0.0.1", 0), Idp))
        slow = serve(SlowServer(("127.0.0.1", 0), Slow))
        rounds = sign_rounds()
        with tempfile.TemporaryDirectory() as tmp:
            truth_path = Path(tmp) / "truth.jsonl"
            for version in ["1.0", "1.1"]:
                run_version(args, version, schema, idp.server_address, slow.server_address, rounds, truth_path)
            records = [json.loads(line) for line in truth_path.read_text().splitlines() if line]
            if args.records is not None:
                shutil.copyfile(truth_path, args.records)
        versions = {
            version: summarize([r for r in records if r["version"] == version]) for version in ["1.0", "1.1"]
        }
        print(json.dumps({"sign_rounds": rounds, "versions": versions}, indent=1))
        return 0
    finally:
        for server in (idp, slow):
            if server is not None:
                server.shutdown()
                server.server_close()
        with admin.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()


if __name__ == "__main__":
    sys.exit(main())
