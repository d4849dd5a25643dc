/** Thrown by a check when the learner's code is wrong. Becomes a `fail`. */
export class CheckFailure extends Error {
  override name = "CheckFailure";
}

/**
 * Thrown when the lab itself cannot run a check: a broker is down, a timeout hit.
 * Becomes an `error`, never a `fail`, so the learner is not blamed for the machine.
 */
export class LabError extends Error {
  override name = "LabError";
}

export function fail(message: string): never {
  throw new CheckFailure(message);
}

/** Infrastructure errors the learner did not cause: connection refused, DNS, broker gone. */
export function isInfrastructureError(e: unknown): boolean {
  if (e instanceof LabError) return true;
  const err = e as { code?: unknown; name?: unknown; message?: unknown } | null;
  const code = typeof err?.code === "string" ? err.code : "";
  if (["ECONNREFUSED", "EHOSTUNREACH", "ENOTFOUND", "ETIMEDOUT"].includes(code)) return true;
  const name = typeof err?.name === "string" ? err.name : "";
  if (name === "KafkaJSConnectionError") return true;
  return name === "KafkaJSNumberOfRetriesExceeded" && /ECONNREFUSED|Connection error/.test(String(err?.message));
}
