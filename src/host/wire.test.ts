import { describe, expect, it } from "vitest";
import { LineReader, Peer, markSync, type Msg } from "./wire.ts";

/** Two peers wired back to back, messages delivered on a later turn as over a pipe. */
function pair(serve: (to: unknown, args: unknown[]) => unknown) {
  let a!: Peer;
  let b!: Peer;
  const later = (p: () => Peer) => (m: Msg) => setImmediate(() => p().receive(JSON.parse(JSON.stringify(m)) as Msg));
  a = new Peer({ send: later(() => b) }, null, 1);
  b = new Peer({ send: later(() => a) }, (to, args) => serve(to, args), 2);
  return { grader: a, host: b };
}

describe("the RPC wire", () => {
  it("keeps identity: what the grader sends and gets back is its very object", async () => {
    const { grader } = pair((_to, args) => args[0]);
    const obj = { k: 1, nested: [1, { x: "y" }] };
    const err = new TypeError("boom");
    expect(await grader.call({ export: "echo" }, [obj])).toBe(obj);
    expect(await grader.call({ export: "echo" }, [err])).toBe(err);
  });

  it("carries what JSON cannot: undefined, NaN, -0, bigint, Buffers, Maps, Sets, Dates", async () => {
    const { grader } = pair(() => [undefined, NaN, -0, 10n, Buffer.from("hi"), new Map([[1, "a"]]), new Set(["s"]), new Date(5)]);
    const [u, n, z, big, buf, map, set, date] = (await grader.call({ export: "f" }, [])) as unknown[];
    expect(u).toBeUndefined();
    expect(n).toBeNaN();
    expect(Object.is(z, -0)).toBe(true);
    expect(big).toBe(10n);
    expect((buf as Buffer).toString()).toBe("hi");
    expect((map as Map<number, string>).get(1)).toBe("a");
    expect((set as Set<string>).has("s")).toBe(true);
    expect((date as Date).getTime()).toBe(5);
  });

  it("errors from the other side keep name, message and props", async () => {
    const { grader } = pair(() => {
      throw Object.assign(new RangeError("bad"), { code: "E_X" });
    });
    const e = (await grader.call({ export: "f" }, []).catch((x: unknown) => x)) as Error & { code: string };
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe("RangeError");
    expect(e.message).toBe("bad");
    expect(e.code).toBe("E_X");
  });

  it("functions cross as callbacks, and methods of returned objects keep their `this`", async () => {
    const { grader } = pair(async (_to, args) => {
      const cb = args[0] as (n: number) => Promise<number>;
      const twice = await cb(21);
      return {
        n: twice,
        add(this: { n: number }, x: number) {
          return this.n + x;
        },
      };
    });
    const r = (await grader.call({ export: "f" }, [async (n: number) => n * 2])) as { n: number; add(x: number): Promise<number> };
    expect(r.n).toBe(42);
    expect(await r.add(1)).toBe(43);
  });

  it("the same method of two instances stays bound to each its own", async () => {
    class Counter {
      constructor(readonly name: string) {}
      who(): string {
        return this.name;
      }
    }
    let n = 0;
    const { grader } = pair(() => new Counter(`c${++n}`));
    const a = (await grader.call({ export: "f" }, [])) as { who(): Promise<string> };
    const b = (await grader.call({ export: "f" }, [])) as { who(): Promise<string> };
    expect(await a.who()).toBe("c1");
    expect(await b.who()).toBe("c2");
  });

  it("a returned promise settles later; `raw` leaves it unfollowed", async () => {
    let resolve!: (v: string) => void;
    const { grader } = pair(() => new Promise<string>((r) => (resolve = r)));
    const { value } = (await grader.call({ export: "f" }, [], true)) as { value: Promise<string> };
    let settled = false;
    void value.then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(settled).toBe(false);
    resolve("late");
    expect(await value).toBe("late");
  });

  it("an AbortSignal crosses as a live mirror", async () => {
    let mirror!: AbortSignal;
    const { grader } = pair((_to, args) => {
      mirror = args[0] as AbortSignal;
      return mirror.aborted;
    });
    const c = new AbortController();
    expect(await grader.call({ export: "f" }, [c.signal])).toBe(false);
    const reason = new Error("stop");
    c.abort(reason);
    await new Promise((r) => setTimeout(r, 10));
    expect(mirror.aborted).toBe(true);
    expect((mirror.reason as Error).message).toBe("stop");
  });

  it("marks sync callbacks so the other side calls them blocking", () => {
    const f = markSync(() => 1);
    const { grader } = pair(() => 0);
    expect(grader.encode(f)).toMatchObject({ $: "fn", sync: true });
    expect(grader.encode(() => 1)).not.toHaveProperty("sync");
  });

  it("refuses values too deep to cross, and says so", () => {
    const { grader } = pair(() => 0);
    let deep: unknown = 1;
    for (let i = 0; i < 100; i++) deep = [deep];
    expect(() => grader.encode(deep)).toThrow(/nested deeper/);
  });

  it("closing rejects every call still waiting", async () => {
    const { grader } = pair(() => new Promise(() => {}));
    const p = grader.call({ export: "f" }, []);
    grader.close(new Error("host gone"));
    await expect(p).rejects.toThrow("host gone");
  });
});

describe("LineReader", () => {
  it("keeps a multi-byte character whole when a chunk ends inside it", () => {
    const lines: string[] = [];
    const r = new LineReader((l) => lines.push(l));
    const bytes = Buffer.from('{"note":"größe ✓ 🧾"}\nnext\n', "utf8");
    // Every split point, including those inside ß (2 bytes), ✓ (3) and 🧾 (4).
    for (let cut = 1; cut < bytes.length; cut++) {
      r.push(bytes.subarray(0, cut));
      r.push(bytes.subarray(cut));
    }
    expect(new Set(lines)).toEqual(new Set(['{"note":"größe ✓ 🧾"}', "next"]));
    expect(lines.length).toBe(2 * (bytes.length - 1));
  });
});
