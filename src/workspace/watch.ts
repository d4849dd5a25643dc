import { watch } from "node:fs";
import { basename, dirname } from "node:path";

/**
 * Calls `onChange` after each save of `file`, one run at a time. Editors write in bursts
 * (truncate, write, rename), so changes within a short window collapse into one run.
 */
export function watchFile(file: string, onChange: () => Promise<unknown>): Promise<void> {
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    let running = false;
    let again = false;
    const fire = async () => {
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        await onChange();
      } finally {
        running = false;
        if (again) {
          again = false;
          void fire();
        }
      }
    };
    // Watch the folder, not the file: editors that save by rename replace the file's inode.
    const watcher = watch(dirname(file), (_event, name) => {
      if (name !== basename(file)) return;
      clearTimeout(timer);
      timer = setTimeout(() => void fire(), 150);
    });
    process.once("SIGINT", () => {
      watcher.close();
      resolve();
    });
  });
}
