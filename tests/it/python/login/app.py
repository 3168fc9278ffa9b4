"""A login service, run under the official auto-instrumentation (`opentelemetry-instrument
python app.py`) with no span or attribute of its own, that measures itself.

`POST /login` is the seed talk's SAML login: eleven SQL statements (two of them run twice with
the same values, some with server-side time), the last one against `policy_rules`; then SAML
signing, CPU work without a span; then a POST to the identity provider; then the twelfth
statement, which stores the session. Version 1.1
(`LOGIN_VERSION=1.1`) adds what a dependency upgrade hid: a round trip on a raw socket, no span,
between the `policy_rules` query and the identity provider's POST.

Ground truth: the service times itself on its own clocks (`time.perf_counter_ns` for wall time,
`time.thread_time_ns` for its thread's CPU time) and appends one JSON object per request to the
file `LOGIN_TRUTH` names, after the request's span has ended. Every call with a span is timed
twice: from outside (around `cursor.execute`, `session.send`: the instrumentation's own work at
the span's edges included) and from inside (the cursor and transport adapter that the
instrumentation calls: only the library's work). The span lies between the two, so the pair
bounds what the traces can show. `handler` runs from this app's `before_request` hook to its
`teardown_request` hook, both inside the request span; `outer` wraps the instrumented WSGI
application, so it contains the request span.

Configuration, all from the environment: LOGIN_DSN, LOGIN_SCHEMA (the tables' schema),
LOGIN_IDP_URL, LOGIN_SLOW_ADDR (host:port of the server that answers after its delay; used by
1.1), LOGIN_VERSION, LOGIN_SIGN_ROUNDS (PBKDF2 rounds of the signature), LOGIN_TRUTH. The app
listens on an ephemeral port of 127.0.0.1 and prints `listening PORT` once it accepts requests.
SIGTERM, SIGINT or the end of its standard input stops it; the SDK's exit hook then exports the
spans it still holds.

Invariant: single-threaded and sequential, so a request's critical path is all of it; every
address is on 127.0.0.1; nothing it measures is written while a request's span is open.
"""

import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time

import flask
import psycopg2
import psycopg2.extensions
import requests
from opentelemetry import trace
from werkzeug.serving import make_server

DSN = os.environ["LOGIN_DSN"]
SCHEMA = os.environ["LOGIN_SCHEMA"]
IDP_URL = os.environ["LOGIN_IDP_URL"]
VERSION = os.environ["LOGIN_VERSION"]
SIGN_ROUNDS = int(os.environ["LOGIN_SIGN_ROUNDS"])
TRUTH_PATH = os.environ["LOGIN_TRUTH"]
SLOW_HOST, SLOW_PORT = os.environ["LOGIN_SLOW_ADDR"].rsplit(":", 1)

#: Timeout of every call the app makes, so a stuck dependency fails the request, not the run.
CALL_TIMEOUT_S = 10


class Meter:
    """Wall and CPU time of one request, split by what the time was spent in."""

    def __init__(self):
        self.totals = {}
        self.counts = {}
        # The start and end (perf_counter_ns) of the latest call of each key.
        self.last = {}

    def add(self, key, start_ns, wall_ns, cpu_ns):
        wall, cpu = self.totals.get(key, (0, 0))
        self.totals[key] = (wall + wall_ns, cpu + cpu_ns)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.last[key] = (start_ns, start_ns + wall_ns)

    def wall(self, key):
        return self.totals.get(key, (0, 0))[0]

    def cpu(self, key):
        return self.totals.get(key, (0, 0))[1]


class Timed:
    """Adds the wall and CPU time of a `with` block to the current request's meter."""

    __slots__ = ("key", "wall", "cpu")

    def __init__(self, key):
        self.key = key

    def __enter__(self):
        self.wall = time.perf_counter_ns()
        self.cpu = time.thread_time_ns()

    def __exit__(self, *exc):
        cpu = time.thread_time_ns() - self.cpu
        wall = time.perf_counter_ns() - self.wall
        meter = flask.g.get("meter")
        if meter is not None:
            meter.add(self.key, self.wall, wall, cpu)


class TimedCursor(psycopg2.extensions.cursor):
    """The cursor the instrumentation's traced cursor derives from: its `execute` runs inside the
    query's span, so it times the driver's own work."""

    def execute(self, query, params=None):
        with Timed("db_inner"):
            return super().execute(query, params)


class TimedAdapter(requests.adapters.HTTPAdapter):
    """The transport the instrumented `Session.send` calls, inside the HTTP span."""

    def send(self, request, **kwargs):
        with Timed("network_inner"):
            return super().send(request, **kwargs)


def connect():
    connection = psycopg2.connect(
        DSN,
        cursor_factory=TimedCursor,
        options=f"-c search_path={SCHEMA}",
        connect_timeout=CALL_TIMEOUT_S,
    )
    connection.autocommit = True
    return connection


app = flask.Flask(__name__)
db = connect()
idp = requests.Session()
idp.mount("http://", TimedAdapter())
truth = open(TRUTH_PATH, "a", encoding="utf-8")


def query(statement, params=()):
    """One statement, timed from outside: the instrumentation's work around it included."""
    cursor = db.cursor()
    try:
        with Timed("db"):
            cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []
    finally:
        cursor.close()


def sign(assertion, key):
    """SAML signing as CPU work without a span: a fixed number of PBKDF2 rounds, then the digest."""
    digest = hashlib.pbkdf2_hmac("sha256", assertion.encode(), key, SIGN_ROUNDS)
    return hashlib.sha256(digest + assertion.encode()).hexdigest()


def fetch_metadata():
    """The hidden round trip of version 1.1: a raw socket, so no instrumentation sees it."""
    with Timed("hidden"):
        with socket.create_connection((SLOW_HOST, int(SLOW_PORT)), timeout=CALL_TIMEOUT_S) as conn:
            conn.sendall(b"metadata\n")
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                answer += chunk
    return answer


@app.before_request
def start_meter():
    # Registered after the instrumentation's hook, so the request span is already open.
    flask.g.meter = Meter()
    flask.g.trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
    flask.g.handler = (time.perf_counter_ns(), time.thread_time_ns())


@app.teardown_request
def stop_meter(exc):
    # Flask runs teardown hooks last registered first: this one before the one that ends the
    # span. It only reads the clocks and keeps the meter for `measured` to write.
    wall_ns = time.perf_counter_ns() - flask.g.handler[0]
    cpu_ns = time.thread_time_ns() - flask.g.handler[1]
    flask.request.environ["login.meter"] = (
        flask.g.meter, flask.g.trace_id, flask.g.get("stretch", (0, 0)), wall_ns, cpu_ns
    )


@app.post("/login")
def login():
    form = flask.request.get_json()
    email = form["email"]
    user_id, password_hash, _ = query(
        "SELECT id, password_hash, pg_sleep(0.004) FROM users WHERE email = %s", (email,)
    )[0]
    if hashlib.sha256(form["password"].encode()).hexdigest() != password_hash:
        flask.abort(401)
    (locked,) = query("SELECT count(*) FROM lockouts WHERE user_id = %s", (user_id,))[0]
    if locked:
        flask.abort(423)
    (org_id,) = query("SELECT org_id FROM memberships WHERE user_id = %s", (user_id,))[0]
    org_name, entity_id, _ = query(
        "SELECT name, entity_id, pg_sleep(0.003) FROM orgs WHERE id = %s", (org_id,)
    )[0]
    # The session check loads the user again: the same query twice.
    query("SELECT id, password_hash, pg_sleep(0.004) FROM users WHERE email = %s", (email,))
    (role,) = query(
        "SELECT role FROM memberships WHERE user_id = %s AND org_id = %s", (user_id, org_id)
    )[0]
    query("SELECT count(*), pg_sleep(0.002) FROM failed_logins WHERE user_id = %s", (user_id,))
    # The assertion builder looks the organization up again.
    query("SELECT name, entity_id, pg_sleep(0.003) FROM orgs WHERE id = %s", (org_id,))
    (key_material, _) = query(
        "SELECT key_material, pg_sleep(0.005) FROM saml_keys WHERE org_id = %s", (org_id,)
    )[0]
    attributes = query("SELECT name, value FROM user_attributes WHERE user_id = %s", (user_id,))
    rules = query(
        "SELECT rule, pg_sleep(0.004) FROM policy_rules WHERE org_id = %s AND role = %s",
        (org_id, role),
    )
    policy_end = (flask.g.meter.last["db"][1], flask.g.meter.last["db_inner"][1])

    assertion = "".join(
        [f'<saml:Assertion Issuer="{entity_id}" Subject="{email}" Org="{org_name}">']
        + [f"<saml:Attribute Name='{name}'>{value}</saml:Attribute>" for name, value in attributes]
        + [f"<saml:Condition>{rule}</saml:Condition>" for rule, _ in rules]
        + ["</saml:Assertion>"]
    )
    with Timed("sign"):
        signature = sign(assertion, key_material.encode())
    if VERSION == "1.1":
        fetch_metadata()
    request = idp.prepare_request(
        requests.Request("POST", IDP_URL, json={"assertion": assertion, "signature": signature})
    )
    with Timed("network"):
        response = idp.send(request, timeout=CALL_TIMEOUT_S)
    # The stretch between the policy_rules query and the POST, seen from outside the two calls'
    # spans (the shortest it can be) and from inside them (the longest).
    meter = flask.g.meter
    flask.g.stretch = (
        meter.last["network"][0] - policy_end[0],
        meter.last["network_inner"][0] - policy_end[1],
    )
    response.raise_for_status()
    session_id = response.json()["session"]
    query("INSERT INTO sessions (id, user_id) VALUES (%s, %s)", (session_id, user_id))
    return {"session": session_id}


#: What the meter keeps apart, each timed for wall and CPU time.
KEYS = ("db", "db_inner", "network", "network_inner", "hidden", "sign")


def measured(wsgi_app):
    """Wraps the instrumented WSGI application, whose call opens and ends the request span: the
    record of a request is written after the span has ended."""

    def outer(environ, start_response):
        wall_start, cpu_start = time.perf_counter_ns(), time.thread_time_ns()
        result = wsgi_app(environ, start_response)
        outer_wall_ns = time.perf_counter_ns() - wall_start
        outer_cpu_ns = time.thread_time_ns() - cpu_start
        kept = environ.get("login.meter")
        if kept is not None:
            meter, trace_id, stretch, handler_wall_ns, handler_cpu_ns = kept
            record = {
                "version": VERSION,
                "trace_id": trace_id,
                "stretch_outer_ns": stretch[0],
                "stretch_inner_ns": stretch[1],
                "outer_wall_ns": outer_wall_ns,
                "outer_cpu_ns": outer_cpu_ns,
                "handler_wall_ns": handler_wall_ns,
                "handler_cpu_ns": handler_cpu_ns,
                "calls": dict(meter.counts),
            }
            for key in KEYS:
                record[f"{key}_wall_ns"] = meter.wall(key)
                record[f"{key}_cpu_ns"] = meter.cpu(key)
            truth.write(json.dumps(record) + "\n")
            truth.flush()
        return result

    return outer


def stop(signum, frame):
    raise SystemExit(0)


def stop_when_orphaned():
    """Stops the app like SIGTERM does once its standard input closes: the driver holds the other
    end, so the app never outlives it, even when the driver is killed."""
    # os.read, not sys.stdin: a daemon thread inside a buffered read breaks interpreter shutdown.
    while os.read(0, 4096):
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def main():
    app.wsgi_app = measured(app.wsgi_app)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=stop_when_orphaned, daemon=True).start()
    server = make_server("127.0.0.1", 0, app, threaded=False)
    print(f"listening {server.server_port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        db.close()
        truth.close()


if __name__ == "__main__":
    sys.exit(main())
