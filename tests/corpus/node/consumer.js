// The shop's RabbitMQ consumer, a process and a service of its own, run under the official
// auto-instrumentation like the web app (app.js). Each message asks for a shipment: it loads the
// order and records the shipment (one SELECT, one INSERT), then acknowledges the message, which
// ends the message's span. Each message is counted like a request (see shop.js), one JSON line
// of its own.
//
// Configuration, from the environment (besides shop.js's): CORPUS_BROKER_URL, CORPUS_QUEUE. It
// prints `ready` once it consumes. SIGTERM or the end of its standard input stops it; the SDK's
// own SIGTERM handler exports the spans it still holds.
//
// Invariant: one message at a time (prefetch 1); a message's record is written after its ack.

"use strict";

const { trace } = require("@opentelemetry/api");
const amqp = require("amqplib");

const shop = require("./shop");

const QUEUE = process.env.CORPUS_QUEUE;

async function main() {
  // The pool's first connection, opened before any message: start-up, like the web app's.
  await shop.query("SELECT 1");
  const connection = await amqp.connect(process.env.CORPUS_BROKER_URL);
  const channel = await connection.createChannel();
  await channel.assertQueue(QUEUE, { durable: false });
  await channel.prefetch(1);
  shop.ready();

  // Runs inside the message's span, which the instrumentation opened and ends at the ack.
  const onMessage = (message) => {
    const record = new shop.Record("consumer", { queue: QUEUE });
    record.identify(trace.getActiveSpan());
    const start = process.hrtime.bigint();
    shop.current.run(record, async () => {
      let status = "ok";
      try {
        const { order: orderId, label } = JSON.parse(message.content.toString());
        const [order] = await shop.query("SELECT id, status FROM orders WHERE id = $1", [orderId]);
        await shop.query("INSERT INTO shipments (order_id, label) VALUES ($1, $2)", [order.id, label]);
        channel.ack(message);
      } catch (err) {
        status = `error: ${err}`;
        channel.nack(message, false, false);
      }
      const wallNs = shop.elapsedNs(start);
      record.close({ handler_wall_ns: wallNs, wall_ns: wallNs, status });
    });
  };
  const { consumerTag } = await channel.consume(QUEUE, onMessage);
  console.log("ready");

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    process.stdin.destroy();
    await channel.cancel(consumerTag);
    await channel.close();
    await connection.close();
    await shop.pool.end();
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
