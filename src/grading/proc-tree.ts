/**
 * A process and everything under it, read from /proc (Linux): the submission host is bwrap, then
 * the learner's Node, then whatever that starts. The engine kills the whole tree at once and
 * sums its memory; a grader looks at the tree's open files.
 */
import { readdirSync, readFileSync } from "node:fs";

/**
 * `pid` first, then every process under it, each before its own children (a parent before its
 * children: reverse it to kill the deepest first). Null when `pid` itself cannot be read (gone,
 * or no /proc); children that vanish meanwhile are left out. Eight levels at most.
 */
export function processTree(pid: number): number[] | null {
  const out: number[] = [];
  const visit = (p: number, depth: number): boolean => {
    if (depth > 8) return true;
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${p}/task`);
    } catch {
      return depth > 0;
    }
    out.push(p);
    for (const task of tasks) {
      let kids = "";
      try {
        kids = readFileSync(`/proc/${p}/task/${task}/children`, "utf8").trim();
      } catch {
        // gone meanwhile
      }
      for (const k of kids ? kids.split(/\s+/) : []) visit(Number(k), depth + 1);
    }
    return true;
  };
  return visit(pid, 0) ? out : null;
}
