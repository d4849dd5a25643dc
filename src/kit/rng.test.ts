import { describe, expect, it } from "vitest";
import { createRng, deriveSeed } from "./rng.ts";

describe("createRng", () => {
  it("replays the same sequence for the same seed", () => {
    const a = createRng(42);
    const b = createRng(42);
    expect(Array.from({ length: 5 }, () => a.int(0, 1000))).toEqual(Array.from({ length: 5 }, () => b.int(0, 1000)));
  });
  it("gives each check its own seed", () => {
    expect(deriveSeed(1, "x")).not.toBe(deriveSeed(1, "y"));
  });
});
