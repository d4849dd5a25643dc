import { describe, expect, it } from "vitest";
import { History } from "./history.ts";

describe("History", () => {
  it("finds a duplicate effect and names both deliveries", () => {
    const h = new History();
    for (const id of ["m-1", "m-2"]) {
      h.record("produced", id);
      h.record("delivered", id);
      h.record("applied", id);
    }
    h.record("delivered", "m-2");
    h.record("applied", "m-2");
    expect(h.noLoss()).toBeNull();
    expect(h.noDuplicateEffect()).toBe("message m-2 applied twice (delivery 2 and delivery 3)");
  });

  it("finds loss, disorder per key and a wrong dead-letter set", () => {
    const h = new History();
    h.record("produced", "a");
    h.record("produced", "b");
    h.record("applied", "b", { key: "k", seq: 2 });
    h.record("applied", "c", { key: "k", seq: 1 });
    h.record("dead-lettered", "c");
    expect(h.noLoss()).toBe("message a was never applied (1 of 2 lost)");
    expect(h.orderPerKey()).toBe("key k: message c (#1) was applied after b (#2)");
    expect(h.deadLettersEqual(["x"])).toBe("poison message x never reached the dead-letter queue");
    expect(h.deadLettersEqual(["c", "x"])).toMatch(/x never reached/);
    expect(h.deadLettersEqual([])).toBe("message c was dead-lettered but is not poison");
  });
});
