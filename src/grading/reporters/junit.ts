import type { RunResult } from "../result.ts";

const escapeXml = (s: string): string =>
  s
    // XML 1.0 forbids most control characters, and learners' output can hold any of them.
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F]/g, "")
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");

/** JUnit XML: a testsuite per exercise, a testcase per check. `fail` → <failure>, `error` → <error>. */
export function toJUnit(results: RunResult[]): string {
  const total = results.reduce((n, r) => n + r.tests.length, 0);
  const failures = results.reduce((n, r) => n + r.tests.filter((c) => c.status === "fail").length, 0);
  const errors = results.reduce((n, r) => n + r.tests.filter((c) => c.status === "error").length, 0);
  const time = (ms: number) => (ms / 1000).toFixed(3);
  const lines = [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<testsuites name="msglab" tests="${total}" failures="${failures}" errors="${errors}" time="${time(results.reduce((n, r) => n + r.durationMs, 0))}">`,
  ];
  for (const r of results) {
    const f = r.tests.filter((c) => c.status === "fail").length;
    const e = r.tests.filter((c) => c.status === "error").length;
    lines.push(
      `  <testsuite name="${escapeXml(r.exercise)}" tests="${r.tests.length}" failures="${f}" errors="${e}" time="${time(r.durationMs)}">`,
      `    <properties><property name="seed" value="${r.seed}"/><property name="submission" value="${escapeXml(r.submission)}"/></properties>`,
    );
    for (const c of r.tests) {
      const open = `    <testcase classname="${escapeXml(r.exercise)}" name="${escapeXml(c.name)}" time="${time(c.durationMs)}"`;
      if (c.status === "pass") {
        lines.push(`${open}/>`);
        continue;
      }
      const tag = c.status === "fail" ? "failure" : "error";
      const body = [c.message ?? "", c.hint ? `Hint: ${c.hint}` : ""].filter(Boolean).join("\n");
      lines.push(`${open}>`, `      <${tag} message="${escapeXml(c.message ?? c.status)}">${escapeXml(body)}</${tag}>`, `    </testcase>`);
    }
    lines.push(`  </testsuite>`);
  }
  lines.push(`</testsuites>`, "");
  return lines.join("\n");
}
