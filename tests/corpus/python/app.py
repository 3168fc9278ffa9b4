"""The shop's web app: Flask, SQLAlchemy 2.0 over psycopg2 (PostgreSQL), a Redis cache, outgoing
HTTP with requests, and a Celery task published to RabbitMQ, run under the official
auto-instrumentation (`opentelemetry-instrument python app.py`) with no span or attribute of its
own. It counts what each request does (see shop.py) and appends one JSON line per request.

Endpoints, one shape each:
- `GET /orders/<id>/lines`: the order, its lines, then each line's product lazily: six loads of
  one row by primary key through the ORM (an N+1), eight statements.
- `GET /reports/open-orders`: the same SELECT, with its values written in the text, twice (a
  duplicate: the second could reuse the first's result).
- `POST /orders/open/touch`: the same UPDATE, values in the text, twice (a write: never "reuse
  the first result").
- `GET /products/<id>`: cache-aside: Redis GET; on a miss, SELECT by primary key, then SET.
- `POST /orders/<id>/notify`: one INSERT, then a thread posts to the notification hook, which
  answers after the request has ended (fire-and-forget).
- `POST /orders/<id>/ship`: SELECT and UPDATE of the order, an awaited POST to the carrier (slow:
  it answers after more than a second), then `ship_order.delay` publishes a Celery task that the
  worker (worker.py) consumes.
- `GET /health`: nothing.

Configuration, from the environment (besides shop.py's and worker.py's): CORPUS_REDIS_URL,
CORPUS_KEY_PREFIX (of every Redis key), CORPUS_STUB_URL (the carrier and the notification hook).
The app creates and fills its tables at start-up, listens on an ephemeral port of 127.0.0.1 and
prints `listening PORT` once it accepts requests. SIGTERM, SIGINT or the end of its standard input
stops it; the SDK's exit hook then exports the spans it still holds.

Invariant: requests are served one at a time on one thread (fire-and-forget work runs on threads
of its own); every address is on 127.0.0.1; a request's record is written after its span ended.
"""

import contextvars
import json
import logging
import os
import signal
import sys
import threading
import time

import flask
import redis
import requests
from sqlalchemy import text
from werkzeug.serving import make_server

import shop
from worker import ship_order

REDIS_URL = os.environ["CORPUS_REDIS_URL"]
KEY_PREFIX = os.environ["CORPUS_KEY_PREFIX"]
STUB_URL = os.environ["CORPUS_STUB_URL"]
#: How long a cached product stays in Redis: longer than a run, so later reads hit.
CACHE_TTL_S = 300

#: Whether the code running in this context is fire-and-forget work, not awaited by its request.
detached = contextvars.ContextVar("detached", default=False)


class CountingAdapter(requests.adapters.HTTPAdapter):
    """The transport the instrumented `Session.send` calls: counts each outgoing call."""

    def send(self, request, **kwargs):
        record = shop.recording()
        start_ns = time.perf_counter_ns()
        try:
            return super().send(request, **kwargs)
        finally:
            end_ns = time.perf_counter_ns()
            with record.lock:
                record.outgoing.append(
                    {
                        "method": request.method,
                        "path": requests.utils.urlparse(request.url).path,
                        "awaited": not detached.get(),
                        "wall_ns": end_ns - start_ns,
                        "end_perf_ns": end_ns,
                    }
                )


app = flask.Flask(__name__)
cache = redis.Redis.from_url(REDIS_URL, socket_timeout=shop.CALL_TIMEOUT_S)
http = requests.Session()
http.mount("http://", CountingAdapter())


def cache_key(kind, key_id):
    return f"{KEY_PREFIX}:{kind}:{key_id}"


def cache_get(key):
    value = cache.get(key)
    record = shop.recording()
    with record.lock:
        record.cache.append({"op": "GET", "key": key, "hit": value is not None})
    return value


def cache_set(key, value):
    cache.set(key, value, ex=CACHE_TTL_S)
    record = shop.recording()
    with record.lock:
        record.cache.append({"op": "SET", "key": key})


@app.before_request
def identify():
    # Registered after the instrumentation's hook, so the request span is already current.
    record = shop.current.get()
    record.identify_span()
    record.fields["endpoint"] = f"{flask.request.method} {flask.request.url_rule.rule}"
    record.fields["handler_start_ns"] = time.perf_counter_ns()


@app.teardown_request
def handler_done(exc):
    # Flask runs teardown hooks last registered first: this one before the one that ends the span.
    record = shop.current.get()
    record.fields["handler_wall_ns"] = time.perf_counter_ns() - record.fields.pop("handler_start_ns")


@app.get("/orders/<int:order_id>/lines")
def order_lines(order_id):
    with shop.Session() as session:
        order = session.get(shop.Order, order_id)
        lines = [
            {"sku": line.product.name, "quantity": line.quantity, "price_cents": line.product.price_cents}
            for line in order.lines
        ]
    return {"order": order_id, "lines": lines}


OPEN_ORDERS = text("SELECT count(*) FROM orders WHERE status = 'open'")


@app.get("/reports/open-orders")
def open_orders():
    with shop.Session() as session:
        # The header and the body of the report each count the open orders.
        header = session.execute(OPEN_ORDERS).scalar_one()
        body = session.execute(OPEN_ORDERS).scalar_one()
    return {"header": header, "body": body}


TOUCH_OPEN = text("UPDATE orders SET touched = touched + 1 WHERE status = 'open'")


@app.post("/orders/open/touch")
def touch_open():
    with shop.Session() as session:
        # An audit hook and the handler each mark the open orders as seen.
        session.execute(TOUCH_OPEN)
        session.execute(TOUCH_OPEN)
        session.commit()
    return {"touched": True}


@app.get("/products/<int:product_id>")
def product(product_id):
    key = cache_key("product", product_id)
    cached = cache_get(key)
    if cached is not None:
        return json.loads(cached)
    with shop.Session() as session:
        found = session.get(shop.Product, product_id)
        body = {"id": found.id, "name": found.name, "price_cents": found.price_cents}
    cache_set(key, json.dumps(body))
    return body


def notify_hook(record, order_id):
    """The fire-and-forget call: runs in a copy of the request's context, so its span is a
    child of the request span that ends long before it."""
    detached.set(True)
    try:
        http.post(f"{STUB_URL}/hooks/notify", json={"order": order_id}, timeout=shop.CALL_TIMEOUT_S)
    finally:
        record.release()


@app.post("/orders/<int:order_id>/notify")
def notify(order_id):
    with shop.Session() as session:
        session.add(shop.Notification(order_id=order_id, channel="email"))
        session.commit()
    record = shop.current.get()
    record.hold()
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(notify_hook, record, order_id)).start()
    return {"queued": True}, 202


@app.post("/orders/<int:order_id>/ship")
def ship(order_id):
    with shop.Session() as session:
        order = session.get(shop.Order, order_id)
        order.touched += 1
        session.commit()
    label = http.post(
        f"{STUB_URL}/carrier/labels", json={"order": order_id}, timeout=shop.CALL_TIMEOUT_S
    ).json()["path"]
    ship_order.delay(order_id, label)
    record = shop.current.get()
    with record.lock:
        record.published.append(
            {"system": "celery", "task": ship_order.name, "queue": ship_order.app.conf.task_default_queue}
        )
    return {"shipping": order_id}, 202


@app.get("/health")
def health():
    return {"ok": True}


def measured(wsgi_app):
    """Wraps the instrumented WSGI application, whose call opens and ends the request span: the
    record holds the window around it and is written after the span has ended."""

    def outer(environ, start_response):
        record = shop.Record(
            "request",
            target=environ.get("PATH_INFO", ""),
            start_unix_ns=shop.now_unix_ns(),
        )
        token = shop.current.set(record)
        start_ns = time.perf_counter_ns()
        try:
            result = wsgi_app(environ, start_response)
        finally:
            end_ns = time.perf_counter_ns()
            shop.current.reset(token)
        record.end_perf_ns = end_ns
        record.close(wall_ns=end_ns - start_ns, status=environ.get("corpus.status"))
        return result

    return outer


@app.after_request
def keep_status(response):
    flask.request.environ["corpus.status"] = response.status_code
    return response


def stop(signum, frame):
    raise SystemExit(0)


def stop_when_orphaned():
    """Stops the app like SIGTERM does once its standard input closes: the driver holds the other
    end, so the app never outlives it."""
    # os.read, not sys.stdin: a daemon thread inside a buffered read breaks interpreter shutdown.
    while os.read(0, 4096):
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def main():
    # The driver reads the records, not werkzeug's log of each request.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    shop.seed()
    cache.ping()
    shop.ready()
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
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join(shop.CALL_TIMEOUT_S)
        shop.at_exit()


if __name__ == "__main__":
    sys.exit(main())
