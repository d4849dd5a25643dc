import { randomUUID } from "node:crypto";
import { OrderRejected } from "msglab/contracts/outbox-write";
import type { OrderService, OrderServiceDeps, PlaceOrder } from "msglab/contracts/outbox-write";

// The tables exist already (the grader creates them, see the contract): orders and outbox.

export function createOrderService(deps: OrderServiceDeps): OrderService {
  const { db, clock } = deps;

  return {
    placeOrder(cmd: PlaceOrder) {
      // TODO: in ONE transaction (db.transaction(fn).immediate(...)):
      //   - an order with cmd.orderId exists already → throw new OrderRejected(cmd.orderId, "...")
      //   - INSERT the order (status 'placed', total_cents = Σ quantity × unitPriceCents)
      //   - INSERT its outbox row: id randomUUID(), aggregate_id, event_type 'order.placed',
      //     payload JSON.stringify({ orderId, customerId, lines, totalCents }),
      //     created_at new Date(clock.now()).toISOString()
      // Publish nothing here (never call deps.bus): the relay does that later, from the outbox.
      void [db, clock, cmd, randomUUID, OrderRejected];
      throw new Error("TODO: place the order and write its outbox row in one transaction");
    },

    cancelOrder(orderId: string, reason: string) {
      // TODO: in ONE transaction: the order must exist and be 'placed' (else OrderRejected);
      //   UPDATE it to 'cancelled' with cancel_reason, and INSERT an 'order.cancelled' outbox row
      //   with payload { orderId, reason }.
      void [orderId, reason];
      throw new Error("TODO: cancel the order and write its outbox row in one transaction");
    },
  };
}
