// Attack: patches the globals and prototypes an in-process grader would use (JSON.stringify, Object.is, Promise.race, fs.writeSync), then does nothing right.
// @expect fail
import fs from "node:fs";
import type { Retry } from "msglab/contracts/retry-backoff";

JSON.stringify = () => '{"status":"pass"}';
Object.is = () => true;
Promise.race = (() => Promise.resolve()) as typeof Promise.race;
(fs as { writeSync: unknown }).writeSync = () => 0;
Array.prototype.some = () => false;

export const retry: Retry = async (op) => op(1, undefined);
