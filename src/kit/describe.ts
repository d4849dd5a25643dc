import { inspect } from "node:util";

/** A short, one-line rendering of a value for a check message. */
export function describe(value: unknown, max = 160): string {
  const s = typeof value === "string" ? JSON.stringify(value) : inspect(value, { depth: 3, breakLength: Infinity });
  return s.length > max ? s.slice(0, max - 1) + "…" : s;
}
