// The shop's data and its ground truth, shared by the web app (app.js) and the RabbitMQ consumer
// (consumer.js): the PostgreSQL pool, the MariaDB pool of the warehouse's stock, the schema and
// its rows, and the `Record` each request or message keeps of what it did.
//
// What is counted, and where: statements by `query` and `stockQuery`, the two functions that send
// SQL (each call is one `pool.query` or one prepared `execute` on MariaDB, one statement); pool
// checkouts by the pg pool's `acquire` event (each is a `pg-pool.connect` span, not a statement;
// mysql2's pool makes no span of its own); cache operations, outgoing calls and published
// messages by the app around each call.
//
// Configuration, all from the environment: CORPUS_DSN, CORPUS_SCHEMA (the tables' schema in
// PostgreSQL and database in MariaDB, both made by the driver), CORPUS_MARIADB_URL, CORPUS_TRUTH
// (the JSON-lines file records are appended to), CORPUS_PROCESS (`web` or `consumer`),
// OTEL_SERVICE_NAME.
//
// Invariant: a record is written once, after the span it describes has ended and after every call
// it started has finished; nothing here creates a span or an attribute.

"use strict";

const fs = require("node:fs");
const { AsyncLocalStorage } = require("node:async_hooks");
const mysql = require("mysql2/promise");
const { Pool } = require("pg");

const SCHEMA = process.env.CORPUS_SCHEMA;
const PROCESS = process.env.CORPUS_PROCESS;
const SERVICE = process.env.OTEL_SERVICE_NAME;
const TRUTH = process.env.CORPUS_TRUTH;
// Timeout of every call the apps make, so a stuck dependency fails the request, not the run.
const CALL_TIMEOUT_MS = 10_000;

// The record of the request or message being handled in this async context.
const current = new AsyncLocalStorage();

function nowUnixNs() {
  // Microseconds are what the clock offers; the nanoseconds are zeros.
  return Math.round((performance.timeOrigin + performance.now()) * 1000) * 1000;
}

function elapsedNs(startNs) {
  return Number(process.hrtime.bigint() - startNs);
}

class Record {
  constructor(kind, fields = {}) {
    this.fields = { service: SERVICE, process: PROCESS, kind, start_unix_ns: nowUnixNs(), ...fields };
    this.statements = [];
    this.cache = [];
    this.outgoing = [];
    this.published = [];
    this.poolCheckouts = 0;
    // Calls still running that this record waits for (fire-and-forget work), and whether its
    // owner is done with it.
    this.pending = 0;
    this.closed = false;
  }

  // Takes the trace and span ids of `span`: the request's or the message's.
  identify(span) {
    const context = span.spanContext();
    this.fields.trace_id = context.traceId;
    this.fields.span_id = context.spanId;
  }

  hold() {
    this.pending += 1;
  }

  release() {
    this.pending -= 1;
    if (this.closed && this.pending === 0) this.write();
  }

  // The owner is done: written now, or when the last held call is released.
  close(fields) {
    Object.assign(this.fields, fields);
    this.closed = true;
    if (this.pending === 0) this.write();
  }

  write() {
    const executions = this.statements.map((s) => JSON.stringify([s.sql, s.params]));
    const record = {
      ...this.fields,
      db_calls: this.statements.length,
      distinct_statements: new Set(this.statements.map((s) => s.sql)).size,
      distinct_executions: new Set(executions).size,
      statements: this.statements,
      pool_checkouts: this.poolCheckouts,
      cache: this.cache,
      outgoing: this.outgoing,
      awaited_calls: this.outgoing.filter((call) => call.awaited).length,
      not_awaited_calls: this.outgoing.filter((call) => !call.awaited).length,
      published: this.published,
    };
    fs.appendFileSync(TRUTH, JSON.stringify(record) + "\n");
  }
}

// What happens outside any request or message: start-up until `ready`, then background work
// (none is expected; it is written at exit only if there was some).
let outside = new Record("startup");

function recording() {
  return current.getStore() ?? outside;
}

function ready() {
  const startup = outside;
  outside = new Record("background");
  startup.close({});
}

function atExit() {
  if (outside.statements.length > 0 || outside.poolCheckouts > 0) outside.close({});
}

const pool = new Pool({
  connectionString: process.env.CORPUS_DSN,
  options: `-c search_path=${SCHEMA}`,
  max: 4,
  connectionTimeoutMillis: CALL_TIMEOUT_MS,
  statement_timeout: CALL_TIMEOUT_MS,
});
pool.on("acquire", () => {
  recording().poolCheckouts += 1;
});

// One statement: the only way the shop sends SQL.
async function query(sql, params = []) {
  recording().statements.push({ sql, params: params.length > 0 ? JSON.stringify(params) : null });
  const result = await pool.query(sql, params);
  return result.rows;
}

// The warehouse's stock, on MariaDB. One connection: requests come one at a time, and the
// connection made at start-up is the one every request reuses, so no request opens one.
const stock = mysql.createPool({
  uri: process.env.CORPUS_MARIADB_URL,
  database: SCHEMA,
  connectionLimit: 1,
  connectTimeout: CALL_TIMEOUT_MS,
});

// One statement on MariaDB, prepared (`?` placeholders), as mysql2's `execute` sends it.
async function stockQuery(sql, params = []) {
  recording().statements.push({ sql, params: params.length > 0 ? JSON.stringify(params) : null });
  const [rows] = await stock.execute(sql, params);
  return rows;
}

const STOCK_TABLES = [
  "CREATE TABLE warehouses (id integer PRIMARY KEY, name varchar(64) NOT NULL)",
  "CREATE TABLE stock (product_id integer NOT NULL, warehouse_id integer NOT NULL, quantity integer NOT NULL, PRIMARY KEY (product_id, warehouse_id))",
];

const TABLES = [
  "CREATE TABLE products (id integer PRIMARY KEY, name text NOT NULL, price_cents integer NOT NULL)",
  "CREATE TABLE orders (id integer PRIMARY KEY, customer text NOT NULL, status text NOT NULL, touched integer NOT NULL DEFAULT 0)",
  "CREATE TABLE order_lines (id integer PRIMARY KEY, order_id integer NOT NULL REFERENCES orders, product_id integer NOT NULL REFERENCES products, quantity integer NOT NULL)",
  "CREATE TABLE notifications (id serial PRIMARY KEY, order_id integer NOT NULL REFERENCES orders, channel text NOT NULL)",
  "CREATE TABLE shipments (id serial PRIMARY KEY, order_id integer NOT NULL REFERENCES orders, label text NOT NULL)",
];

// The tables and their rows: five open orders of six lines each, every line another product.
async function seed() {
  for (const statement of TABLES) await query(statement);
  await query(
    "INSERT INTO products (id, name, price_cents) SELECT n, 'product ' || n, 100 * n FROM generate_series(1, 30) AS n",
  );
  await query(
    "INSERT INTO orders (id, customer, status) SELECT n, 'customer ' || n, 'open' FROM generate_series(1, 5) AS n",
  );
  await query(
    "INSERT INTO order_lines (id, order_id, product_id, quantity) SELECT n, (n - 1) / 6 + 1, n, (n - 1) % 6 + 1 FROM generate_series(1, 30) AS n",
  );
}

// The web app's MariaDB tables and rows: six warehouses, each holding every one of the 30
// products.
async function seedStock() {
  for (const statement of STOCK_TABLES) await stockQuery(statement);
  await stockQuery("INSERT INTO warehouses (id, name) SELECT seq, CONCAT('warehouse ', seq) FROM seq_1_to_6");
  await stockQuery(
    "INSERT INTO stock (product_id, warehouse_id, quantity) SELECT p.seq, w.seq, p.seq * w.seq FROM seq_1_to_30 AS p CROSS JOIN seq_1_to_6 AS w",
  );
}

module.exports = {
  CALL_TIMEOUT_MS,
  Record,
  atExit,
  current,
  elapsedNs,
  pool,
  query,
  ready,
  recording,
  seed,
  seedStock,
  stock,
  stockQuery,
};
