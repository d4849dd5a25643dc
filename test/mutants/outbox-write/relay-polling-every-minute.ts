// Mutant: an in-process relay that polls the outbox once a minute (no grading would wait that long for its publish)
// @targets nothing is published in the request path: the bus is never called, not even after the commit
import { randomUUID } from "node:crypto";
import { OrderRejected } from "msglab/contracts/outbox-write";
import type { OrderService, OrderServiceDeps, PlaceOrder } from "msglab/contracts/outbox-write";

export function createOrderService(deps: OrderServiceDeps): OrderService {
  const { db, clock } = deps;
  const findOrder = db.prepare<[string], { status: string }>("SELECT status FROM orders WHERE id = ?");
  const insertOrder = db.prepare("INSERT INTO orders (id, customer_id, status, total_cents) VALUES (?, ?, 'placed', ?)");
  const cancel = db.prepare("UPDATE orders SET status = 'cancelled', cancel_reason = ? WHERE id = ?");
  const insertEvent = db.prepare("INSERT INTO outbox (id, aggregate_id, event_type, payload, created_at) VALUES (?, ?, ?, ?, ?)");

  /** The event, in the caller's transaction: committed with the state change or not at all. */
  const record = (orderId: string, type: string, payload: unknown) =>
    insertEvent.run(randomUUID(), orderId, type, JSON.stringify(payload), new Date(clock.now()).toISOString());

  const place = db.transaction((cmd: PlaceOrder) => {
    if (findOrder.get(cmd.orderId)) throw new OrderRejected(cmd.orderId, "an order with this id exists");
    const totalCents = cmd.lines.reduce((sum, l) => sum + l.quantity * l.unitPriceCents, 0);
    insertOrder.run(cmd.orderId, cmd.customerId, totalCents);
    record(cmd.orderId, "order.placed", { orderId: cmd.orderId, customerId: cmd.customerId, lines: cmd.lines, totalCents });
  });

  const cancelOrder = db.transaction((orderId: string, reason: string) => {
    const order = findOrder.get(orderId);
    if (!order) throw new OrderRejected(orderId, "no such order");
    if (order.status !== "placed") throw new OrderRejected(orderId, `it is ${order.status}`);
    cancel.run(reason, orderId);
    record(orderId, "order.cancelled", { orderId, reason });
  });

  // A tiny relay in the service itself: publish what is new, once a second.
  const pending = db.prepare<[], { id: string; event_type: string; payload: string }>("SELECT id, event_type, payload FROM outbox WHERE processed_at IS NULL ORDER BY created_at");
  const seen = new Set<string>();
  const timer = setInterval(() => {
    for (const r of pending.all()) {
      if (seen.has(r.id)) continue;
      seen.add(r.id);
      void deps.bus.publish(r.event_type, JSON.parse(r.payload)).catch(() => {});
    }
  }, 60_000);
  timer.unref?.();

  return {
    // IMMEDIATE: the write lock first, then the reads, so another process cannot change what we
    // read before we write (and we wait for the lock instead of failing with SQLITE_BUSY).
    placeOrder: (cmd) => place.immediate(cmd),
    cancelOrder: (orderId, reason) => cancelOrder.immediate(orderId, reason),
  };
}
