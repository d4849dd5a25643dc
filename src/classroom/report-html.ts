/**
 * report.html: one self-contained page, no server, no network. A matrix of students × exercises
 * (each cell coloured by status, with its score; click it for that student's checks, messages and
 * hints), the class's pass rate per exercise and per check (where the class struggles), and
 * sorting by student, total or any exercise. Every string from a submission is set as text, never
 * as HTML, so a student's name or a message cannot inject anything into the page.
 */
import type { GradingRow } from "./gradebook.ts";

export interface ReportData {
  generatedAt: string;
  labVersion: string;
  students: { name: string; commit: string | null; notes: string[] }[];
  exercises: { id: string; title: string; checks: string[] }[];
  rows: GradingRow[];
}

/** What the page needs of each grading: no full results, no submission output. */
function slim(rows: GradingRow[]) {
  return rows.map((r) => ({
    student: r.student,
    exercise: r.exercise,
    status: r.status,
    score: r.score,
    maxScore: r.maxScore,
    seed: r.seed,
    message: r.message ?? (r.result?.status === "error" ? r.result.message : null),
    tests: (r.result?.tests ?? []).map((t) => ({ name: t.name, status: t.status, message: t.message, hint: t.hint })),
  }));
}

export function renderReport(data: ReportData): string {
  const payload = JSON.stringify({ ...data, rows: slim(data.rows) }).replace(/</g, "\\u003c").replace(/\u2028/g, "\\u2028").replace(/\u2029/g, "\\u2029");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>msglab gradebook</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2330; }
  h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
  .meta { color: #667; margin-bottom: 16px; }
  table { border-collapse: collapse; }
  th, td { border: 1px solid #dde; padding: 4px 8px; text-align: left; }
  th { background: #f3f4f8; cursor: pointer; user-select: none; white-space: nowrap; }
  th[aria-sort="ascending"]::after { content: " ▲"; } th[aria-sort="descending"]::after { content: " ▼"; }
  td.cell { cursor: pointer; text-align: center; min-width: 64px; }
  .pass { background: #d7f5dd; } .fail { background: #fbd9d6; } .error { background: #fdf0c4; } .missing { background: #e9eaee; color: #667; }
  td.cell.selected { outline: 3px solid #3451b2; outline-offset: -3px; }
  .rate { text-align: right; font-variant-numeric: tabular-nums; }
  .bar { display: inline-block; height: 8px; background: #5a7be0; vertical-align: middle; margin-left: 6px; }
  #detail { margin-top: 16px; padding: 12px; border: 1px solid #dde; max-width: 960px; }
  #detail li { margin: 6px 0; } .msg { white-space: pre-wrap; color: #333; } .hint { color: #3451b2; }
  .notes { color: #8a5a00; }
</style>
</head>
<body>
<h1>msglab gradebook</h1>
<div class="meta" id="meta"></div>
<table id="matrix"><thead></thead><tbody></tbody></table>
<div id="detail" hidden></div>
<h2>Where the class struggles</h2>
<table id="exercise-rates"><thead><tr><th>exercise</th><th>passed</th><th>pass rate</th></tr></thead><tbody></tbody></table>
<h2>Pass rate per check</h2>
<table id="check-rates"><thead><tr><th>exercise</th><th>check</th><th>passed / graded</th><th>pass rate</th></tr></thead><tbody></tbody></table>
<script id="data" type="application/json">${payload}</script>
<script>
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("data").textContent);
  var el = function (tag, text, cls) { var e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = String(text); if (cls) e.className = cls; return e; };
  var byKey = {};
  data.rows.forEach(function (r) { byKey[r.student + "\\u0000" + r.exercise] = r; });
  var students = data.students.map(function (s) { return s.name; });
  data.rows.forEach(function (r) { if (students.indexOf(r.student) < 0) students.push(r.student); });
  var exercises = data.exercises.map(function (e) { return e.id; });
  var total = function (s) { return exercises.reduce(function (n, e) { var r = byKey[s + "\\u0000" + e]; return n + (r ? r.score : 0); }, 0); };
  var pct = function (x) { return (Math.round(x * 1000) / 10).toFixed(1) + "%"; };

  document.getElementById("meta").textContent = students.length + " students × " + exercises.length + " exercises · graded with msglab " + data.labVersion + " · " + data.generatedAt;

  // The matrix, sortable by any column.
  var thead = document.querySelector("#matrix thead"), tbody = document.querySelector("#matrix tbody");
  var head = el("tr");
  var cols = ["student"].concat(exercises, ["total"]);
  var sort = { col: "student", dir: 1 };
  cols.forEach(function (c) {
    var th = el("th", c);
    th.dataset.col = c;
    th.addEventListener("click", function () { sort = { col: c, dir: sort.col === c ? -sort.dir : (c === "student" ? 1 : -1) }; draw(); });
    head.appendChild(th);
  });
  thead.appendChild(head);
  var value = function (s, c) {
    if (c === "student") return s.toLowerCase();
    if (c === "total") return total(s);
    var r = byKey[s + "\\u0000" + c];
    return r ? r.score + (r.status === "pass" ? 0.5 : 0) : -1;
  };
  function draw() {
    head.querySelectorAll("th").forEach(function (th) { th.setAttribute("aria-sort", th.dataset.col === sort.col ? (sort.dir > 0 ? "ascending" : "descending") : "none"); });
    var order = students.slice().sort(function (a, b) { var x = value(a, sort.col), y = value(b, sort.col); return x < y ? -sort.dir : x > y ? sort.dir : a.localeCompare(b); });
    tbody.textContent = "";
    order.forEach(function (s) {
      var tr = el("tr");
      tr.dataset.student = s;
      tr.appendChild(el("td", s));
      exercises.forEach(function (e) {
        var r = byKey[s + "\\u0000" + e];
        var td = el("td", r ? (r.status === "missing" || r.maxScore === 0 ? r.status : r.score + "/" + r.maxScore) : "", "cell " + (r ? r.status : "missing"));
        td.dataset.student = s; td.dataset.exercise = e; td.dataset.status = r ? r.status : "none";
        td.title = s + " · " + e + (r ? " · " + r.status : "");
        td.addEventListener("click", function () { show(s, e, td); });
        tr.appendChild(td);
      });
      tr.appendChild(el("td", total(s), "rate"));
      tbody.appendChild(tr);
    });
  }
  draw();

  // One student's checks for one exercise.
  function show(s, e, td) {
    document.querySelectorAll("td.cell.selected").forEach(function (x) { x.classList.remove("selected"); });
    td.classList.add("selected");
    var d = document.getElementById("detail");
    d.hidden = false; d.textContent = "";
    var r = byKey[s + "\\u0000" + e];
    d.appendChild(el("h2", s + " · " + e));
    var student = data.students.filter(function (x) { return x.name === s; })[0];
    if (student && student.notes.length) student.notes.forEach(function (n) { d.appendChild(el("p", n, "notes")); });
    if (!r) { d.appendChild(el("p", "Not assigned.")); return; }
    d.appendChild(el("p", r.status + " · " + r.score + "/" + r.maxScore + (r.seed !== null ? " · seed " + r.seed : "")));
    if (r.message) d.appendChild(el("p", r.message, "msg"));
    var ul = el("ul");
    r.tests.forEach(function (t) {
      var li = el("li", null, t.status);
      li.dataset.check = t.name;
      li.appendChild(el("strong", (t.status === "pass" ? "✓ " : t.status === "fail" ? "✗ " : "! ") + t.name));
      if (t.message) li.appendChild(el("div", t.message, "msg"));
      if (t.hint) li.appendChild(el("div", "hint: " + t.hint, "hint"));
      ul.appendChild(li);
    });
    d.appendChild(ul);
  }

  // Pass rates: per exercise over every student assigned it, per check over the gradings that ran it.
  var exBody = document.querySelector("#exercise-rates tbody"), ckBody = document.querySelector("#check-rates tbody");
  exercises.forEach(function (e) {
    var rows = data.rows.filter(function (r) { return r.exercise === e; });
    var passed = rows.filter(function (r) { return r.status === "pass"; }).length;
    var rate = rows.length ? passed / rows.length : 0;
    var tr = el("tr"); tr.dataset.exercise = e;
    tr.appendChild(el("td", e)); tr.appendChild(el("td", passed + "/" + rows.length));
    var td = el("td", pct(rate), "rate"); td.dataset.rate = String(rate);
    var bar = el("span", null, "bar"); bar.style.width = Math.round(rate * 120) + "px"; td.appendChild(bar);
    tr.appendChild(td); exBody.appendChild(tr);
    var names = [];
    rows.forEach(function (r) { r.tests.forEach(function (t) { if (names.indexOf(t.name) < 0) names.push(t.name); }); });
    names.forEach(function (n) {
      var ran = 0, ok = 0;
      rows.forEach(function (r) { r.tests.forEach(function (t) { if (t.name === n) { ran++; if (t.status === "pass") ok++; } }); });
      var tr2 = el("tr"); tr2.dataset.exercise = e; tr2.dataset.check = n;
      tr2.appendChild(el("td", e)); tr2.appendChild(el("td", n)); tr2.appendChild(el("td", ok + "/" + ran));
      var r2 = ran ? ok / ran : 0;
      var td2 = el("td", pct(r2), "rate"); td2.dataset.rate = String(r2); tr2.appendChild(td2);
      ckBody.appendChild(tr2);
    });
  });
})();
</script>
</body>
</html>
`;
}
