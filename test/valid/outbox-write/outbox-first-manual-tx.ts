// Valid: manual BEGIN IMMEDIATE / COMMIT / ROLLBACK instead of db.transaction; the outbox row is written FIRST and the state change second, refused by its own statement (ON CONFLICT DO NOTHING, UPDATE … WHERE status = 'placed') and undone by the rollback; a v4 UUID built from randomBytes
import { randomBytes } from "node:crypto";
import { OrderRejected } from "msglab/contracts/outbox-write";
import type { OrderService, OrderServiceDeps, PlaceOrder } from "msglab/contracts/outbox-write";

function uuidV4(): string {
  const b = randomBytes(16);
  b[6] = (b[6]! & 0x0f) | 0x40; // version 4
  b[8] = (b[8]! & 0x3f) | 0x80; // variant 10xx
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function createOrderService({ db, clock }: OrderServiceDeps): OrderService {
  const event = db.prepare("INSERT INTO outbox (id, aggregate_id, event_type, payload, created_at) VALUES (@id, @aggregate, @type, @payload, @at)");
  const insertOrder = db.prepare("INSERT INTO orders (id, customer_id, status, total_cents) VALUES (?, ?, 'placed', ?) ON CONFLICT (id) DO NOTHING");
  const cancelIfPlaced = db.prepare("UPDATE orders SET status = 'cancelled', cancel_reason = ? WHERE id = ? AND status = 'placed'");

  function inTransaction(work: (at: string) => void): void {
    const at = new Date(clock.now()).toISOString();
    db.exec("BEGIN IMMEDIATE");
    try {
      work(at);
      db.exec("COMMIT");
    } catch (e) {
      if (db.inTransaction) db.exec("ROLLBACK");
      throw e;
    }
  }

  return {
    async placeOrder(cmd: PlaceOrder) {
      const totalCents = cmd.lines.reduce((s, l) => s + l.quantity * l.unitPriceCents, 0);
      inTransaction((at) => {
        event.run({ id: uuidV4(), aggregate: cmd.orderId, type: "order.placed", at, payload: JSON.stringify({ orderId: cmd.orderId, customerId: cmd.customerId, lines: cmd.lines, totalCents }) });
        if (insertOrder.run(cmd.orderId, cmd.customerId, totalCents).changes !== 1) throw new OrderRejected(cmd.orderId, "already exists");
      });
    },
    async cancelOrder(orderId: string, reason: string) {
      inTransaction((at) => {
        event.run({ id: uuidV4(), aggregate: orderId, type: "order.cancelled", at, payload: JSON.stringify({ orderId, reason }) });
        if (cancelIfPlaced.run(reason, orderId).changes !== 1) throw new OrderRejected(orderId, "unknown, or not placed");
      });
    },
  };
}
