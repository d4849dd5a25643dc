import { watch } from "node:fs";
import { basename, dirname } from "node:path";

/**
 * Calls `onChange` now and after each save of `file`, one run at a time, until `stop` aborts
 * (then it resolves once the run in flight, itself stopped by the same signal, has ended).
 * Editors write in bursts (truncate, write, rename) within a few ms; changes within a short
 * window collapse into one run.
 */
export function watchFile(file: string, onChange: () => Promise<unknown>, stop: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    let running: Promise<void> | null = null;
    let again = false;
    const fire = (): void => {
      if (stop.aborted) return;
      if (running) {
        again = true;
        return;
      }
      running = (async () => {
        try {
          await onChange();
        } finally {
          running = null;
          if (again) {
            again = false;
            fire();
          }
        }
      })();
    };
    fire();
    // Watch the folder, not the file: editors that save by rename replace the file's inode.
    const watcher = watch(dirname(file), (_event, name) => {
      if (name !== basename(file)) return;
      clearTimeout(timer);
      timer = setTimeout(fire, 40);
    });
    stop.addEventListener(
      "abort",
      () => {
        watcher.close();
        clearTimeout(timer);
        void (running ?? Promise.resolve()).catch(() => {}).then(() => resolve());
      },
      { once: true },
    );
  });
}
