// The shop's web app in Node: express 5, a pg Pool (PostgreSQL), mysql2 (MariaDB), ioredis, amqplib and fetch, run
// under the official auto-instrumentation (`node --require
// @opentelemetry/auto-instrumentations-node/register`, see drive.py) with no span or attribute of
// its own. It counts what each request does (see shop.js) and appends one JSON line
// per request.
//
// Endpoints, one shape each:
// - `GET /orders/:id/lines`: the order, its lines, then each line's product: six loads of one row
//   by primary key (an N+1), eight statements.
// - `GET /reports/open-orders`: the same SELECT, values in the text, twice (a duplicate).
// - `POST /orders/open/touch`: the same UPDATE, values in the text, twice (a write: never "reuse
//   the first result").
// - `GET /products/:id`: cache-aside: Redis GET; on a miss, SELECT by primary key, then SET.
// - `POST /orders/:id/notify`: one INSERT, then a fetch to the notification hook that the
//   request does not await (fire-and-forget): it answers after the response has gone.
// - `POST /orders/:id/ship`: SELECT and UPDATE of the order, an awaited fetch to the carrier
//   (slow), then a message published on a confirm channel, the broker's confirmation not
//   awaited; consumer.js consumes it.
// - `GET /products/:id/stock`: the product's stock rows on MariaDB, then each row's warehouse:
//   six prepared loads of one row by primary key (an N+1 with `?` placeholders), seven statements.
// - `GET /health`: nothing.
//
// Configuration, from the environment (besides shop.js's): CORPUS_REDIS_URL, CORPUS_KEY_PREFIX
// (of every Redis key), CORPUS_BROKER_URL, CORPUS_QUEUE, CORPUS_STUB_URL. The app creates and
// fills its tables at start-up, listens on an ephemeral port of 127.0.0.1 and prints
// `listening PORT` once it accepts requests. SIGTERM or the end of its standard input stops it;
// the SDK's own SIGTERM handler exports the spans it still holds.
//
// Invariant: every address is on the loopback interface; a request's record is written after
// its response has finished and every call it started has ended.

"use strict";

const http = require("node:http");
const { trace } = require("@opentelemetry/api");
const amqp = require("amqplib");
const express = require("express");
const Redis = require("ioredis");

const shop = require("./shop");

const KEY_PREFIX = process.env.CORPUS_KEY_PREFIX;
const QUEUE = process.env.CORPUS_QUEUE;
const STUB_URL = process.env.CORPUS_STUB_URL;
// How long a cached product stays in Redis: longer than a run, so later reads hit.
const CACHE_TTL_S = 300;

const cache = new Redis(process.env.CORPUS_REDIS_URL, { commandTimeout: shop.CALL_TIMEOUT_MS, lazyConnect: true });
let channel;

async function cacheGet(key) {
  const value = await cache.get(key);
  shop.recording().cache.push({ op: "GET", key, hit: value !== null });
  return value;
}

async function cacheSet(key, value) {
  await cache.set(key, value, "EX", CACHE_TTL_S);
  shop.recording().cache.push({ op: "SET", key });
}

// One outgoing call, counted; `awaited` says whether the request waits for it.
async function call(path, body, awaited) {
  const record = shop.recording();
  const start = process.hrtime.bigint();
  try {
    const response = await fetch(`${STUB_URL}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(shop.CALL_TIMEOUT_MS),
    });
    return await response.json();
  } finally {
    record.outgoing.push({
      method: "POST",
      path,
      awaited,
      wall_ns: shop.elapsedNs(start),
      ended_after_request: record.responded === true,
    });
  }
}

const app = express();

// Names the request by its route, as the instrumentation does (method and `http.route`).
function route(method, path, handler) {
  app[method.toLowerCase()](path, (req, res) => {
    shop.recording().fields.endpoint = `${method} ${path}`;
    return handler(req, res);
  });
}

route("GET", "/orders/:id/lines", async (req, res) => {
  const [order] = await shop.query("SELECT id, customer, status FROM orders WHERE id = $1", [Number(req.params.id)]);
  const lines = await shop.query(
    "SELECT id, product_id, quantity FROM order_lines WHERE order_id = $1 ORDER BY id",
    [order.id],
  );
  const body = [];
  for (const line of lines) {
    const [product] = await shop.query("SELECT id, name, price_cents FROM products WHERE id = $1", [line.product_id]);
    body.push({ sku: product.name, quantity: line.quantity, price_cents: product.price_cents });
  }
  res.json({ order: order.id, lines: body });
});

const OPEN_ORDERS = "SELECT count(*) FROM orders WHERE status = 'open'";

route("GET", "/reports/open-orders", async (req, res) => {
  // The header and the body of the report each count the open orders.
  const [header] = await shop.query(OPEN_ORDERS);
  const [body] = await shop.query(OPEN_ORDERS);
  res.json({ header: header.count, body: body.count });
});

const TOUCH_OPEN = "UPDATE orders SET touched = touched + 1 WHERE status = 'open'";

route("POST", "/orders/open/touch", async (req, res) => {
  // An audit hook and the handler each mark the open orders as seen.
  await shop.query(TOUCH_OPEN);
  await shop.query(TOUCH_OPEN);
  res.json({ touched: true });
});

route("GET", "/products/:id", async (req, res) => {
  const key = `${KEY_PREFIX}:product:${Number(req.params.id)}`;
  const cached = await cacheGet(key);
  if (cached !== null) {
    res.json(JSON.parse(cached));
    return;
  }
  const [product] = await shop.query("SELECT id, name, price_cents FROM products WHERE id = $1", [Number(req.params.id)]);
  await cacheSet(key, JSON.stringify(product));
  res.json(product);
});

route("POST", "/orders/:id/notify", async (req, res) => {
  const orderId = Number(req.params.id);
  await shop.query("INSERT INTO notifications (order_id, channel) VALUES ($1, $2)", [orderId, "email"]);
  const record = shop.recording();
  record.hold();
  // Not awaited: the hook answers after the response has gone.
  call("/hooks/notify", { order: orderId }, false)
    .catch((err) => console.error(`notify hook failed: ${err}`))
    .finally(() => record.release());
  res.status(202).json({ queued: true });
});

route("POST", "/orders/:id/ship", async (req, res) => {
  const orderId = Number(req.params.id);
  const [order] = await shop.query("SELECT id, status, touched FROM orders WHERE id = $1", [orderId]);
  await shop.query("UPDATE orders SET touched = $1 WHERE id = $2", [order.touched + 1, orderId]);
  const label = await call("/carrier/labels", { order: orderId }, true);
  const record = shop.recording();
  const published = { system: "rabbitmq", queue: QUEUE, confirmed: false };
  record.published.push(published);
  record.hold();
  // The broker's confirmation is not awaited: the response goes first.
  channel.sendToQueue(QUEUE, Buffer.from(JSON.stringify({ order: orderId, label: label.path })), {}, (err) => {
    published.confirmed = !err;
    published.confirmed_after_request = record.responded === true;
    record.release();
  });
  res.status(202).json({ shipping: orderId });
});

route("GET", "/products/:id/stock", async (req, res) => {
  const rows = await shop.stockQuery(
    "SELECT warehouse_id, quantity FROM stock WHERE product_id = ? ORDER BY warehouse_id",
    [Number(req.params.id)],
  );
  const body = [];
  for (const row of rows) {
    const [warehouse] = await shop.stockQuery("SELECT id, name FROM warehouses WHERE id = ?", [row.warehouse_id]);
    body.push({ warehouse: warehouse.name, quantity: row.quantity });
  }
  res.json({ product: Number(req.params.id), stock: body });
});

route("GET", "/health", (req, res) => {
  res.json({ ok: true });
});

// Runs outside express, inside the request span the http instrumentation opened: the record
// takes that span's ids and holds the window from here to the response's end.
function handle(req, res) {
  const record = new shop.Record("request", { target: req.url });
  record.identify(trace.getActiveSpan());
  const start = process.hrtime.bigint();
  res.on("finish", () => {
    record.responded = true;
    record.close({ handler_wall_ns: shop.elapsedNs(start), wall_ns: shop.elapsedNs(start), status: res.statusCode });
  });
  shop.current.run(record, () => app(req, res));
}

async function main() {
  await shop.seed();
  await shop.seedStock();
  await cache.connect();
  await cache.ping();
  const connection = await amqp.connect(process.env.CORPUS_BROKER_URL);
  channel = await connection.createConfirmChannel();
  await channel.assertQueue(QUEUE, { durable: false });
  shop.ready();
  const server = http.createServer(handle);
  server.listen(0, "127.0.0.1", () => console.log(`listening ${server.address().port}`));

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    process.stdin.destroy();
    await new Promise((resolve) => server.close(resolve));
    await channel.close();
    await connection.close();
    cache.disconnect();
    await shop.pool.end();
    await shop.stock.end();
    shop.atExit();
  };
  // The SDK's own SIGTERM handler exports what it holds; this one lets the process end.
  process.on("SIGTERM", stop);
  process.stdin.on("end", () => process.kill(process.pid, "SIGTERM"));
  process.stdin.resume();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
