import { describe, expect, it } from "vitest";
import { check, defineOptions } from "../../src/toolkit/index.js";

class Client {
  ping(): string {
    return "pong";
  }
}

const parse = defineOptions({
  flag: check.boolean,
  name: check.string,
  port: check.integer(1, 65_535),
  retries: check.integer(0),
  client: check.instance<Client>("a Client", (value) => value instanceof Client),
  hosts: check.list(check.string),
});

/** The message of the INVALID_ARGUMENT that `input` is refused with. */
function refusal(input: unknown): string {
  try {
    parse(input);
  } catch (error) {
    expect(error).toMatchObject({ code: "INVALID_ARGUMENT", name: "LockError" });
    return (error as Error).message;
  }
  throw new Error("expected a refusal");
}

describe("defineOptions", () => {
  it("returns the options given, each checked, and nothing for undefined", () => {
    const client = new Client();
    expect(parse(undefined)).toEqual({});
    expect(parse({})).toEqual({});
    const parsed = parse({
      flag: false,
      name: "n",
      port: 6379,
      retries: 0,
      client,
      hosts: ["a", "b"],
    });
    expect(parsed).toEqual({
      flag: false,
      name: "n",
      port: 6379,
      retries: 0,
      client,
      hosts: ["a", "b"],
    });
    expect(parsed.client).toBe(client);
  });

  it("counts an option given as undefined as not given, and never checks it", () => {
    const checked: string[] = [];
    const spy = defineOptions({
      a: (value, name) => {
        checked.push(name);
        return value;
      },
    });
    expect(spy({ a: undefined })).toEqual({});
    expect(Object.keys(spy({ a: undefined }))).toEqual([]);
    expect(checked).toEqual([]);
    expect(spy({ a: 1 })).toEqual({ a: 1 });
    expect(checked).toEqual(["options.a"]);
  });

  it("refuses anything but a plain object", () => {
    expect(refusal(null)).toBe("options must be an object, got null");
    expect(refusal([])).toBe("options must be an object, got array");
    // The type only: a URL given as options may hold a password.
    expect(refusal("redis://:secret@host")).toBe("options must be an object, got string");
    expect(refusal(5)).toBe("options must be an object, got number");
  });

  it("refuses an unknown key, even one every object inherits, naming it", () => {
    expect(refusal({ prefix: "x" })).toBe("options.prefix is not a known option");
    expect(refusal({ toString: "x" })).toBe("options.toString is not a known option");
    expect(refusal({ flag: true, Flag: true })).toBe("options.Flag is not a known option");
    // An unknown key given as undefined is refused too: it is still a typo.
    expect(refusal({ prot: undefined })).toBe("options.prot is not a known option");
  });

  it("refuses wrong types, naming options.<key> and what it got", () => {
    expect(refusal({ flag: "yes" })).toBe("options.flag must be a boolean, got string");
    expect(refusal({ flag: null })).toBe("options.flag must be a boolean, got null");
    expect(refusal({ name: "" })).toBe("options.name must be a non-empty string, got string");
    expect(refusal({ name: 5 })).toBe("options.name must be a non-empty string, got number");
    expect(refusal({ client: {} })).toBe("options.client must be a Client, got object");
    expect(refusal({ client: null })).toBe("options.client must be a Client, got null");
    expect(refusal({ client: "c" })).toBe("options.client must be a Client, got string");
  });

  it("checks integers and their range", () => {
    expect(refusal({ port: 0 })).toBe("options.port must be an integer from 1 to 65535, got 0");
    expect(refusal({ port: 65_536 })).toMatch(/got 65536$/);
    expect(refusal({ port: 1.5 })).toMatch(/got 1\.5$/);
    expect(refusal({ port: Number.NaN })).toMatch(/got NaN$/);
    expect(refusal({ port: "80" })).toBe(
      "options.port must be an integer from 1 to 65535, got string",
    );
    expect(refusal({ retries: -1 })).toBe(
      `options.retries must be an integer from 0 to ${Number.MAX_SAFE_INTEGER}, got -1`,
    );
    expect(parse({ port: 1 }).port).toBe(1);
    expect(parse({ port: 65_535 }).port).toBe(65_535);
  });

  it("checks lists and names the item that is wrong", () => {
    expect(refusal({ hosts: [] })).toBe("options.hosts must be a non-empty array, got array");
    expect(refusal({ hosts: "a" })).toBe("options.hosts must be a non-empty array, got string");
    expect(refusal({ hosts: ["a", ""] })).toBe(
      "options.hosts[1] must be a non-empty string, got string",
    );
    expect(refusal({ hosts: ["a", 2] })).toBe(
      "options.hosts[1] must be a non-empty string, got number",
    );
  });

  it("stops at the first refusal, in the order the keys were given", () => {
    expect(refusal({ port: 0, flag: "x" })).toMatch(/^options\.port /);
    expect(refusal({ flag: "x", port: 0 })).toMatch(/^options\.flag /);
  });
});
