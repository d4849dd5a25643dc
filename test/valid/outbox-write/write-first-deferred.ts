// Valid: a deferred db.transaction whose first statement is a write (so it takes the lock before any read); a duplicate id is caught as SQLITE_CONSTRAINT_PRIMARYKEY, a cancel is decided by the UPDATE's changes count; events are objects with toJSON, and the clock is read right before the outbox insert
import { randomUUID } from "node:crypto";
import { OrderRejected } from "msglab/contracts/outbox-write";
import type { OrderCancelled, OrderPlaced, OrderService, OrderServiceDeps, PlaceOrder } from "msglab/contracts/outbox-write";

class OutboxEvent<P> {
  readonly id = randomUUID();
  constructor(
    readonly aggregateId: string,
    readonly type: "order.placed" | "order.cancelled",
    readonly payload: P,
  ) {}
  toJSON(): P {
    return this.payload;
  }
}

export function createOrderService(deps: OrderServiceDeps): OrderService {
  const { db } = deps;
  const append = db.prepare("INSERT INTO outbox (id, aggregate_id, event_type, payload, created_at) VALUES (?, ?, ?, ?, ?)");
  const store = (e: OutboxEvent<unknown>) => append.run(e.id, e.aggregateId, e.type, JSON.stringify(e), new Date(deps.clock.now()).toISOString());

  const place = db.transaction((cmd: PlaceOrder) => {
    const totalCents = cmd.lines.map((l) => l.quantity * l.unitPriceCents).reduce((a, b) => a + b, 0);
    try {
      db.prepare("INSERT INTO orders (id, customer_id, status, total_cents) VALUES (?, ?, ?, ?)").run(cmd.orderId, cmd.customerId, "placed", totalCents);
    } catch (e) {
      if ((e as { code?: string }).code === "SQLITE_CONSTRAINT_PRIMARYKEY") throw new OrderRejected(cmd.orderId, "duplicate order id");
      throw e;
    }
    store(new OutboxEvent<OrderPlaced>(cmd.orderId, "order.placed", { orderId: cmd.orderId, customerId: cmd.customerId, lines: cmd.lines, totalCents }));
  });

  const cancel = db.transaction((orderId: string, reason: string) => {
    const { changes } = db.prepare("UPDATE orders SET status = 'cancelled', cancel_reason = ? WHERE id = ? AND status = 'placed'").run(reason, orderId);
    if (changes === 0) throw new OrderRejected(orderId, "no placed order with this id");
    store(new OutboxEvent<OrderCancelled>(orderId, "order.cancelled", { orderId, reason }));
  });

  return {
    placeOrder: (cmd) => place(cmd),
    cancelOrder: (orderId, reason) => cancel(orderId, reason),
  };
}
