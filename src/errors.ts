/**
 * The one error type commands throw. It carries the exit code the entry point uses,
 * and its message names the fix ("… run `msglab up`").
 */
export class MsglabError extends Error {
  override name = "MsglabError";
  constructor(
    message: string,
    readonly exitCode: 1 | 2 | 130 = 1,
  ) {
    super(message);
  }
}

/** A usage mistake: an unknown exercise, a bad flag value. Exit code 2. */
export function usageError(message: string): MsglabError {
  return new MsglabError(message, 2);
}
