// Loaded with --import: makes importing a broker client or a native module fail loudly,
// to prove a command does not load them.
import { register } from "node:module";
register("data:text/javascript," + encodeURIComponent(`
export async function resolve(specifier, context, next) {
  if (/^(amqplib|kafkajs|better-sqlite3)(\\/|$)/.test(specifier)) throw new Error("forbidden import: " + specifier);
  return next(specifier, context);
}`));
