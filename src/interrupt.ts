/**
 * Ctrl-C while grading: the first one stops the grading at once (the grading process kills its
 * hosts and cleans up, and the result is marked interrupted, so it is never recorded); a second
 * one exits without waiting. Only grading commands install it; prompts handle their own.
 */
import { MsglabError } from "./errors.ts";

let controller: AbortController | null = null;

/** The signal that aborts when the user presses Ctrl-C (or the CLI gets SIGTERM). */
export function interruptSignal(): AbortSignal {
  if (controller) return controller.signal;
  const c = new AbortController();
  controller = c;
  const onSignal = () => {
    if (c.signal.aborted) process.exit(130);
    c.abort();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return c.signal;
}

export function interruptedError(): MsglabError {
  return new MsglabError("Interrupted: grading stopped and cleaned up; nothing was recorded.", 130);
}
