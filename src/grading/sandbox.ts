/**
 * How a submission host is started: under bubblewrap where it runs (Linux), always with Node's
 * permission model inside, and with the permission model alone elsewhere.
 *
 * The host sees, read-only: Node and the system libraries it links, the lab's node_modules,
 * the host runtime (one bundle, no lab sources) and the compiled submission. It writes only its
 * own folder. /tmp is private, the environment is empty but for what the host needs, it has its
 * own PID namespace, and it dies with the grading process. Nothing of the lab's exercises,
 * solutions, graders or kit is in its view.
 */
import { spawnSync } from "node:child_process";
import { existsSync, lstatSync, realpathSync } from "node:fs";
import { dirname, isAbsolute, relative } from "node:path";

export type SandboxMode = "bwrap" | "permission";

export interface SandboxSpec {
  /** The host's own writable folder. */
  dir: string;
  /** Folders every host of the grading may write too (for a restart, or two writers on one file). */
  shared: string[];
  /** Read-only paths the host needs (node_modules, the host bundle's folder, the submission's folder). */
  read: string[];
  /** The lab's install: hidden even if a system path above it is bound. */
  labRoot: string;
  /** False for exercises with no broker: then the host has no network at all. */
  network: boolean;
  memoryMb: number;
  env: Record<string, string>;
}

let bwrapProbe: { ok: boolean; why: string } | undefined;

/** The bubblewrap binary: `MSGLAB_BWRAP` when it lives elsewhere (tests point it at nothing). */
const bwrapBin = () => process.env.MSGLAB_BWRAP || "bwrap";

/** Whether bubblewrap can create a sandbox here (installed, and user namespaces allowed). */
export function bubblewrapStatus(): { ok: boolean; why: string } {
  if (bwrapProbe) return bwrapProbe;
  if (process.platform !== "linux") return (bwrapProbe = { ok: false, why: `bubblewrap is Linux-only (this is ${process.platform})` });
  const r = spawnSync(bwrapBin(), ["--ro-bind", "/", "/", "--unshare-pid", "--die-with-parent", "true"], { stdio: ["ignore", "ignore", "pipe"], timeout: 5000 });
  if (r.error) return (bwrapProbe = { ok: false, why: "bubblewrap (bwrap) is not installed: `sudo apt-get install bubblewrap` (Debian/Ubuntu) or `sudo dnf install bubblewrap`" });
  if (r.status !== 0) return (bwrapProbe = { ok: false, why: `bubblewrap cannot create a sandbox here (${r.stderr.toString().trim() || `exit ${r.status}`}); user namespaces may be disabled` });
  return (bwrapProbe = { ok: true, why: "" });
}

/** bwrap unless MSGLAB_SANDBOX=permission asks for the weaker mode (tests run both). */
export function sandboxMode(env: NodeJS.ProcessEnv = process.env): SandboxMode {
  if (env.MSGLAB_SANDBOX === "permission") return "permission";
  return bubblewrapStatus().ok ? "bwrap" : "permission";
}

/** Node's permission flags differ by version: `--permission` from 22.13/23.5, experimental before. */
export function permissionFlags(spec: SandboxSpec): string[] {
  const flags = process.allowedNodeEnvironmentFlags;
  const f = [flags.has("--permission") ? "--permission" : "--experimental-permission"];
  for (const p of [...spec.read, spec.dir, ...spec.shared]) f.push(`--allow-fs-read=${p}`);
  // zeromq's addon loader asks whether this file exists (musl or glibc); it reveals nothing.
  f.push("--allow-fs-read=/etc/alpine-release");
  for (const p of [spec.dir, ...spec.shared]) f.push(`--allow-fs-write=${p}`);
  f.push("--allow-addons");
  // Newer Node versions gate the network too; the host needs it for the brokers.
  if (spec.network && flags.has("--allow-net")) f.push("--allow-net");
  f.push(`--max-old-space-size=${spec.memoryMb}`);
  if (flags.has("--disable-warning")) f.push("--disable-warning=ExperimentalWarning", "--disable-warning=SecurityWarning");
  return f;
}

function inside(parent: string, child: string): boolean {
  const rel = relative(parent, child);
  return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel));
}

/** The system folders Node needs: its shared libraries, and the dynamic loader. */
function systemBinds(): string[][] {
  const out: string[][] = [];
  for (const p of ["/usr/lib", "/usr/lib64", "/lib", "/lib64", "/lib32", "/usr/lib32"]) {
    if (!existsSync(p)) continue;
    const st = lstatSync(p);
    if (st.isSymbolicLink()) out.push(["--symlink", readlink(p), p]);
    else out.push(["--ro-bind", p, p]);
  }
  for (const p of ["/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/ld.so.cache"]) out.push(["--ro-bind-try", p, p]);
  return out;
}

function readlink(p: string): string {
  // Merged /usr: /lib -> usr/lib. Keep the link relative, as on the host.
  const target = realpathSync(p);
  return relative(dirname(p), target) || target;
}

/** The command that starts one host: [file, ...args]. */
export function hostCommand(mode: SandboxMode, spec: SandboxSpec, hostArgs: string[]): { file: string; args: string[] } {
  const node = process.execPath;
  const nodeArgs = [...permissionFlags(spec), ...hostArgs];
  if (mode === "permission") return { file: node, args: nodeArgs };
  const a: string[] = ["--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--new-session", "--clearenv"];
  if (!spec.network) a.push("--unshare-net");
  for (const b of systemBinds()) a.push(...b);
  a.push("--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp");
  // A lab installed under a system folder (a global npm install) must not show through.
  if (systemBinds().some((b) => b[0] === "--ro-bind" && inside(b[1]!, spec.labRoot))) a.push("--tmpfs", spec.labRoot);
  const nodeReal = realpathSync(node);
  a.push("--ro-bind", nodeReal, nodeReal);
  if (nodeReal !== node) a.push("--ro-bind", node, node);
  for (const p of spec.read) a.push("--ro-bind", p, p);
  for (const p of spec.shared) a.push("--bind", p, p);
  a.push("--bind", spec.dir, spec.dir, "--chdir", spec.dir);
  for (const [k, v] of Object.entries(spec.env)) a.push("--setenv", k, v);
  a.push("--", node, ...nodeArgs);
  return { file: bwrapBin(), args: a };
}
