"""The shop's Celery app and its one task, `shop.ship_order`: the web app (app.py) imports it to
publish, and the worker runs it under the official auto-instrumentation:

    opentelemetry-instrument celery -A worker worker --pool=solo --concurrency=1 \
        --without-mingle --without-gossip --without-heartbeat

The task loads the order and records its shipment: one SELECT and one INSERT, counted like a
request (see shop.py), each task one JSON line of its own. The worker opens its database
connection once it is ready (start-up statements, outside any task), then prints `ready`.

Configuration, from the environment (besides shop.py's): CORPUS_BROKER_URL (RabbitMQ),
CORPUS_QUEUE (the queue the tasks go through, the driver's own per run).

Invariant: no result backend and no remote control, so the only queue this app uses is
CORPUS_QUEUE; the solo pool runs each task in the worker's main process, where the
instrumentation was set up.
"""

import os
import signal
import threading
import time

from celery import Celery
from celery.signals import worker_ready, worker_shutdown
from sqlalchemy import text

import shop

celery = Celery("shop", broker=os.environ["CORPUS_BROKER_URL"])
celery.conf.update(
    task_default_queue=os.environ["CORPUS_QUEUE"],
    task_ignore_result=True,
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    worker_hijack_root_logger=False,
    # `ready` goes to the driver on stdout, not into the worker's log.
    worker_redirect_stdouts=False,
    broker_connection_retry_on_startup=True,
    broker_connection_timeout=shop.CALL_TIMEOUT_S,
)


@celery.task(name="shop.ship_order")
def ship_order(order_id, label):
    record = shop.Record("consumer", task="shop.ship_order", start_unix_ns=shop.now_unix_ns())
    record.identify_span()
    token = shop.current.set(record)
    start_ns = time.perf_counter_ns()
    try:
        with shop.Session() as session:
            order = session.get(shop.Order, order_id)
            session.add(shop.Shipment(order_id=order.id, label=label))
            session.commit()
    finally:
        wall_ns = time.perf_counter_ns() - start_ns
        shop.current.reset(token)
        record.close(wall_ns=wall_ns, handler_wall_ns=wall_ns, status="ok")


def stop_when_orphaned():
    """Stops the worker like SIGTERM does once its standard input closes."""
    while os.read(0, 4096):
        pass
    os.kill(os.getpid(), signal.SIGTERM)


@worker_ready.connect
def warm_up(**kwargs):
    with shop.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    shop.ready()
    threading.Thread(target=stop_when_orphaned, daemon=True).start()
    print("ready", flush=True)


@worker_shutdown.connect
def flush_truth(**kwargs):
    shop.at_exit()
