"""The shop's data and its ground truth, shared by the web app (app.py) and the Celery worker
(worker.py): the SQLAlchemy models and engine, and the `Record` each request or task keeps of
what it did.

What is counted, and where:
- statements: at the driver, in the psycopg2 cursor that the psycopg2 instrumentation's traced
  cursor derives from, so every statement psycopg2 sent is counted once, whoever issued it (the
  ORM, SQLAlchemy's own dialect set-up, the app); BEGIN and COMMIT, which psycopg2 sends by itself
  without `execute`, have no span and are not counted;
- pool checkouts: SQLAlchemy's `checkout` pool event (each one is a `connect` span of the
  SQLAlchemy instrumentation, not a statement);
- cache operations, outgoing HTTP calls and published messages: by the app, around each call.

Configuration, all from the environment: CORPUS_DSN, CORPUS_SCHEMA (the tables' schema, made by
the driver), CORPUS_TRUTH (the JSON-lines file records are appended to), CORPUS_PROCESS (`web` or
`worker`).

Invariant: a record is written once, after the span it describes has ended and after every call
it started has finished; nothing here creates a span or an attribute.
"""

import contextvars
import json
import os
import threading
import time

import psycopg2.extensions
from opentelemetry import trace
from sqlalchemy import ForeignKey, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

DSN = os.environ["CORPUS_DSN"]
SCHEMA = os.environ["CORPUS_SCHEMA"]
PROCESS = os.environ["CORPUS_PROCESS"]
SERVICE = os.environ["OTEL_SERVICE_NAME"]
#: Timeout of every call the apps make, so a stuck dependency fails the request, not the run.
CALL_TIMEOUT_S = 10

#: The record of the request or task running in this context; `None` outside them.
current = contextvars.ContextVar("current_record", default=None)
_truth = open(os.environ["CORPUS_TRUTH"], "a", encoding="utf-8")
_truth_lock = threading.Lock()


class Record:
    """What one request, task or start-up did, counted by the app itself."""

    def __init__(self, kind, **fields):
        self.fields = {"service": SERVICE, "process": PROCESS, "kind": kind, "start_unix_ns": time.time_ns()}
        self.fields.update(fields)
        self.lock = threading.Lock()
        self.statements = []
        self.cache = []
        self.outgoing = []
        self.published = []
        self.pool_checkouts = 0
        # Calls still running that this record waits for (fire-and-forget work), and whether
        # its owner is done with it.
        self.pending = 0
        self.closed = False
        # When the request's window ended (perf_counter_ns), for the calls that outlived it.
        self.end_perf_ns = None

    def identify_span(self):
        """Takes the trace and span ids of the span current now: the request's or the task's."""
        context = trace.get_current_span().get_span_context()
        self.fields["trace_id"] = format(context.trace_id, "032x")
        self.fields["span_id"] = format(context.span_id, "016x")

    def add_statement(self, sql, params):
        with self.lock:
            self.statements.append({"sql": sql, "params": repr(params) if params else None})

    def hold(self):
        with self.lock:
            self.pending += 1

    def release(self):
        with self.lock:
            self.pending -= 1
            done = self.closed and self.pending == 0
        if done:
            self.write()

    def close(self, **fields):
        """The owner is done: written now, or when the last held call is released."""
        with self.lock:
            self.fields.update(fields)
            self.closed = True
            done = self.pending == 0
        if done:
            self.write()

    def write(self):
        for call in self.outgoing:
            end_ns = call.pop("end_perf_ns")
            call["ended_after_request"] = self.end_perf_ns is not None and end_ns > self.end_perf_ns
        executions = [(s["sql"], s["params"]) for s in self.statements]
        record = dict(self.fields)
        record.update(
            db_calls=len(self.statements),
            distinct_statements=len({sql for sql, _ in executions}),
            distinct_executions=len(set(executions)),
            statements=self.statements,
            pool_checkouts=self.pool_checkouts,
            cache=self.cache,
            outgoing=self.outgoing,
            awaited_calls=sum(1 for call in self.outgoing if call["awaited"]),
            not_awaited_calls=sum(1 for call in self.outgoing if not call["awaited"]),
            published=self.published,
        )
        with _truth_lock:
            _truth.write(json.dumps(record, sort_keys=True) + "\n")
            _truth.flush()


#: What happens outside any request or task: the process's start-up until `ready`, then
#: background work (none is expected; it is written at exit only if there was some).
_outside = Record("startup")


def recording():
    return current.get() or _outside


def ready():
    """Start-up is over: its record is written, and what follows outside requests is background."""
    global _outside
    startup, _outside = _outside, Record("background")
    startup.close()


def at_exit():
    if _outside.statements or _outside.pool_checkouts:
        _outside.close()
    _truth.close()


class CountingCursor(psycopg2.extensions.cursor):
    """The base of the instrumentation's traced cursor: runs inside each statement's span."""

    def execute(self, query, vars=None):
        recording().add_statement(as_text(query), vars)
        return super().execute(query, vars)

    def executemany(self, query, vars_list):
        # One call, one span, however many parameter sets.
        recording().add_statement(as_text(query), "executemany")
        return super().executemany(query, vars_list)


def as_text(query):
    return query.decode() if isinstance(query, bytes) else str(query)


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "products"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    price_cents: Mapped[int]


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str]
    status: Mapped[str]
    touched: Mapped[int] = mapped_column(default=0)
    lines: Mapped[list["OrderLine"]] = relationship(order_by="OrderLine.id")


class OrderLine(Base):
    __tablename__ = "order_lines"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int]
    product: Mapped[Product] = relationship()


class Notification(Base):
    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    channel: Mapped[str]


class Shipment(Base):
    __tablename__ = "shipments"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    label: Mapped[str]


engine = create_engine(
    DSN.replace("postgresql://", "postgresql+psycopg2://", 1),
    connect_args={
        "cursor_factory": CountingCursor,
        "options": f"-c search_path={SCHEMA}",
        "connect_timeout": CALL_TIMEOUT_S,
    },
)
Session = sessionmaker(engine)


@event.listens_for(engine, "checkout")
def count_checkout(dbapi_connection, connection_record, connection_proxy):
    record = recording()
    with record.lock:
        record.pool_checkouts += 1


def seed():
    """The tables and their rows: five open orders of six lines each, every line another product."""
    Base.metadata.create_all(engine)
    with Session() as session:
        products = [Product(id=n, name=f"product {n}", price_cents=100 * n) for n in range(1, 31)]
        session.add_all(products)
        session.flush()
        for order_id in range(1, 6):
            session.add(Order(id=order_id, customer=f"customer {order_id}", status="open", touched=0))
        session.flush()
        line_id = 0
        for order_id in range(1, 6):
            for n in range(6):
                line_id += 1
                session.add(
                    OrderLine(id=line_id, order_id=order_id, product_id=line_id, quantity=n + 1)
                )
        session.commit()


def now_unix_ns():
    return time.time_ns()
