import type { ConfigFlags } from "../config.ts";
import { usageError } from "../errors.ts";

/** Flags shared by `run` and `check`. */
export interface GradeFlags extends ConfigFlags {
  seed?: string;
  timeout?: string;
  memory?: string;
  sandbox?: string;
}

export function parseMemory(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 64 || n > 16384) throw usageError(`--memory is in MiB, a whole number from 64 to 16384 (got "${value}").`);
  return n;
}

export function parseSandbox(value: string | undefined): "bwrap" | "permission" | undefined {
  if (value === undefined) return undefined;
  if (value !== "bwrap" && value !== "permission") throw usageError(`--sandbox must be bwrap or permission (got "${value}").`);
  return value;
}

/**
 * Repeated `--only` flags as one list of check names or numbers. "2,5" is two numbers; a name
 * is taken whole (check names may hold commas).
 */
export function parseOnly(value: string | string[] | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const list = (Array.isArray(value) ? value : [value])
    .flatMap((v) => (/^\s*\d+(\s*,\s*\d+)*\s*$/.test(v) ? v.split(",") : [v]))
    .map((v) => v.trim())
    .filter(Boolean);
  if (list.length === 0) throw usageError("--only needs a check name or number (see the list `msglab run <id>` prints).");
  return list;
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
