import { describe, expect, it } from "vitest";
import { forbiddenSql } from "./guards.ts";

describe("the SQL a host refuses", () => {
  it.each([
    ["VACUUM INTO '/tmp/x'", /VACUUM INTO/],
    ["vacuum main into '/tmp/x'", /VACUUM INTO/],
    ["VACUUM/**/INTO '/x'", /VACUUM INTO/],
    ["attach database '/x' as y", /ATTACH/],
    ["SELECT load_extension('x')", /load_extension/],
    ["-- comment\nATTACH '/x' AS y", /ATTACH/],
  ])("%s", (sql, why) => {
    expect(forbiddenSql(sql)).toMatch(why);
  });

  it.each(["SELECT 'attach' AS word", 'CREATE TABLE "attach" (a)', "VACUUM", "INSERT INTO t VALUES ('VACUUM INTO')", "SELECT * FROM [attach]"])("allows %s", (sql) => {
    expect(forbiddenSql(sql)).toBeNull();
  });
});
