import type { ConfigFlags } from "../config.ts";
import { usageError } from "../errors.ts";

/** Flags shared by `run` and `check`. */
export interface GradeFlags extends ConfigFlags {
  seed?: string;
  timeout?: string;
}

export function parseSeed(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 2 ** 32 - 1) throw usageError(`--seed must be a whole number from 0 to 4294967295 (got "${value}").`);
  return n;
}

export function parseTimeout(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 1) throw usageError(`--timeout is in seconds and must be positive (got "${value}").`);
  return Math.round(n * 1000);
}
