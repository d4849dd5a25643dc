import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { LAB_ROOT, MUTANTS_DIR } from "../../src/paths.ts";

export interface Mutant {
  name: string;
  file: string;
  /** What real mistake it models. */
  models: string;
  /** The checks it must fail. */
  targets: string[];
}

/** Reads test/mutants/<slug>/*.ts and their `// Mutant:` and `// @targets` headers. */
export function mutantsOf(slug: string): Mutant[] {
  const dir = join(MUTANTS_DIR, slug);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith(".ts"))
    .sort()
    .map((f) => {
      const text = readFileSync(join(dir, f), "utf8");
      const targets = [...text.matchAll(/^\/\/ @targets (.+)$/gm)].map((m) => m[1]!.trim());
      const models = /^\/\/ Mutant: (.+)$/m.exec(text)?.[1]?.trim() ?? "";
      return { name: f.replace(/\.ts$/, ""), file: join(dir, f), models, targets };
    });
}

export interface ValidAlternative {
  name: string;
  file: string;
  /** How its design differs from the reference. */
  design: string;
}

/** Reads test/valid/<slug>/*.ts: correct solutions with a design of their own (`// Valid: …`). */
export function validOf(slug: string): ValidAlternative[] {
  const dir = join(LAB_ROOT, "test", "valid", slug);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith(".ts"))
    .sort()
    .map((f) => {
      const text = readFileSync(join(dir, f), "utf8");
      const design = /^\/\/ Valid: (.+)$/m.exec(text)?.[1]?.trim() ?? "";
      return { name: f.replace(/\.ts$/, ""), file: join(dir, f), design };
    });
}
