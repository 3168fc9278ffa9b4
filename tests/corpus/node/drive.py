"""Runs the Node shop (app.js and its RabbitMQ consumer, consumer.js) under
`@opentelemetry/auto-instrumentations-node`, sends it a fixed set of requests, and keeps what
the SDK exported and what the shop counted of itself as the corpus's fixtures.

usage: drive.py [--out DIR] [--requests N] [--dsn DSN] [--redis URL] [--broker URL] [--mariadb URL]

Needs `npm ci` done in this folder, and a Python with the corpus's requirements
(../python/requirements.txt: the driver reads the captures with opentelemetry-proto and sets up
and removes the run's schema, queue and keys with psycopg2, kombu and redis).

Everything listens on ephemeral ports of 127.0.0.1: the OTLP capture server and the stub services
(harness.py), the app. The app calls the stub services as `localhost`, so each new connection
resolves a name. The run has a schema of its own in PostgreSQL, a database of its own in MariaDB
(made and removed with the `mariadb` command-line client), its own Redis key prefix and its own
RabbitMQ queue, all removed at the end. The batch span processor keeps its default 5 s delay.

Written to DIR (default: ../fixtures/node), replacing what was there, only when the run
succeeded: export-NNNN.pb, truth.jsonl, expect.json (see ../README.md). A summary of the span
shapes seen goes to stdout.
Exit status: 0 done, 77 a service (PostgreSQL, MariaDB, Redis, RabbitMQ) is not reachable, 1
otherwise.

Invariant: the app and the consumer never outlive the driver (they stop when their standard
input closes); the schema, keys and queue are removed on every way out but SIGKILL.
"""

import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import harness  # noqa: E402

SERVICE = "corpus-node"
CONSUMER_SERVICE = "corpus-node-consumer"
#: What each endpoint is built to show that the statement counts alone do not.
INTENT = {
    "GET /products/:id": {"sequential_io": "must_not"},
    "POST /orders/open/touch": {"sequential_io": "must_not"},
    "GET /health": {"cpu_hot_spot": "must_not"},
}
#: The Node shop's request beyond the shared round: the stock of orders' products, on MariaDB.
EXTRA_ROUND = [("GET", lambda n: f"/products/{n % 5 + 1}/stock")]
#: How long the `mariadb` client may take to connect and run one statement.
MARIADB_TIMEOUT_S = 10
#: The SDK's resource detectors without the cloud ones, whose metadata addresses are off limits.
RESOURCE_DETECTORS = "env,host,os,process,serviceinstance"


def node_command(script):
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is not installed")
    if not (HERE / "node_modules" / "@opentelemetry" / "auto-instrumentations-node").exists():
        raise SystemExit(f"run `npm ci` in {HERE.name}/ first")
    # `-e "require('./app.js')"` rather than `app.js`: Node makes a script's path absolute, and
    # the SDK's process detector would put that machine's path into every export's resource.
    return [node, "--require", "@opentelemetry/auto-instrumentations-node/register", "-e", f"require('./{script}')"]


def mariadb(url, sql):
    """Runs one statement with the `mariadb` client; the error it printed, or None."""
    parts = urlsplit(url)
    command = ["mariadb", "--protocol=TCP", f"--host={parts.hostname}", f"--port={parts.port or 3306}"]
    command.append(f"--user={parts.username or 'root'}")
    if parts.password:
        command.append(f"--password={parts.password}")
    try:
        done = subprocess.run(
            [*command, f"--connect-timeout={MARIADB_TIMEOUT_S}", "--execute", sql],
            capture_output=True,
            text=True,
            timeout=MARIADB_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{type(err).__name__}: {err}"
    if done.returncode != 0:
        return done.stderr.strip() or f"exit {done.returncode}"
    return None


def create_database(run):
    failed = mariadb(run.args.mariadb, f"CREATE DATABASE {run.schema}")
    if failed is not None:
        raise RuntimeError(f"could not create the MariaDB database {run.schema}: {failed}")


def drop_database(run):
    failed = mariadb(run.args.mariadb, f"DROP DATABASE IF EXISTS {run.schema}")
    if failed is not None:
        print(f"could not drop the MariaDB database {run.schema}: {failed}", file=sys.stderr)


def start(run):
    common = dict(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=run.capture.url,
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_NODE_RESOURCE_DETECTORS=RESOURCE_DETECTORS,
        CORPUS_DSN=run.args.dsn,
        CORPUS_MARIADB_URL=run.args.mariadb,
        CORPUS_SCHEMA=run.schema,
        CORPUS_REDIS_URL=run.args.redis,
        CORPUS_BROKER_URL=run.args.broker,
        CORPUS_QUEUE=run.queue,
        CORPUS_KEY_PREFIX=run.key_prefix,
        CORPUS_STUB_URL=run.stub.url.replace("127.0.0.1", "localhost"),
    )
    procs = []
    try:
        # The web app first: it makes the tables the consumer reads.
        web_env = harness.clean_env(
            **common, OTEL_SERVICE_NAME=SERVICE, CORPUS_PROCESS="web", CORPUS_TRUTH=run.truth_dir / "web.jsonl"
        )
        web, port = harness.start(node_command("app.js"), web_env, HERE, "listening")
        procs.append(("app", web))
        consumer_env = harness.clean_env(
            **common,
            OTEL_SERVICE_NAME=CONSUMER_SERVICE,
            CORPUS_PROCESS="consumer",
            CORPUS_TRUTH=run.truth_dir / "consumer.jsonl",
        )
        consumer, _ = harness.start(node_command("consumer.js"), consumer_env, HERE, "ready")
        procs.append(("consumer", consumer))
        # harness.drive stops the last one first: the web app, then the consumer.
        procs.reverse()
        return procs, int(port)
    except BaseException:
        for _, proc in procs:
            harness.kill(proc)
        raise


def main():
    args = harness.arguments(__doc__.splitlines()[0], HERE.parent / "fixtures" / "node")
    missing = mariadb(args.mariadb, "SELECT 1")
    if missing is not None:
        print(f"MariaDB is not reachable: {missing}", file=sys.stderr)
        return harness.EXIT_UNREACHABLE
    return harness.drive("node", args, INTENT, start, EXTRA_ROUND, (create_database, drop_database))


if __name__ == "__main__":
    sys.exit(main())
