import { invalidArgument } from "../errors.js";
import { typeName } from "../keys.js";

/**
 * Checks one option's value; `name` is the option's name, for the message.
 *
 * @group Option parsing
 */
export type Check<T> = (value: unknown, name: string) => T;

/**
 * A schema: one check per known option.
 *
 * @group Option parsing
 */
export type OptionSchema = Readonly<Record<string, Check<unknown>>>;

/**
 * The options a schema accepts, each undefined when not given.
 *
 * @group Option parsing
 */
export type OptionsOf<S extends OptionSchema> = { readonly [K in keyof S]?: ReturnType<S[K]> };

/**
 * A backend factory's option parser: refuses anything but a plain object,
 * every key the schema does not know, and every value its check refuses,
 * each with INVALID_ARGUMENT naming `options.<key>`, before any I/O.
 * An option given as `undefined` counts as not given.
 *
 * @group Option parsing
 */
export function defineOptions<S extends OptionSchema>(schema: S): (input: unknown) => OptionsOf<S> {
  return (input) => {
    if (input === undefined) return {};
    if (typeof input !== "object" || input === null || Array.isArray(input)) {
      throw invalidArgument("options", `must be an object, got ${typeName(input)}`);
    }
    const parsed: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(input)) {
      const check = Object.hasOwn(schema, name) ? schema[name] : undefined;
      if (check === undefined) throw invalidArgument(`options.${name}`, "is not a known option");
      if (value !== undefined) parsed[name] = check(value, `options.${name}`);
    }
    return parsed as OptionsOf<S>;
  };
}

/**
 * Checks for `defineOptions` schemas.
 *
 * @group Option parsing
 */
export const check = {
  boolean: ((value, name) => {
    if (typeof value !== "boolean")
      throw invalidArgument(name, `must be a boolean, got ${typeName(value)}`);
    return value;
  }) as Check<boolean>,

  /** A non-empty string. */
  string: ((value, name) => {
    if (typeof value !== "string" || value.length === 0) {
      throw invalidArgument(name, `must be a non-empty string, got ${typeName(value)}`);
    }
    return value;
  }) as Check<string>,

  /** An integer in [min, max]. */
  integer(min: number, max = Number.MAX_SAFE_INTEGER): Check<number> {
    return (value, name) => {
      if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
        const got = typeof value === "number" ? String(value) : typeName(value);
        throw invalidArgument(name, `must be an integer from ${min} to ${max}, got ${got}`);
      }
      return value;
    };
  },

  /** An object that `test` accepts; `what` says what was expected. */
  instance<T>(what: string, test: (value: object) => boolean): Check<T> {
    return (value, name) => {
      if (typeof value !== "object" || value === null || !test(value)) {
        throw invalidArgument(name, `must be ${what}, got ${typeName(value)}`);
      }
      return value as T;
    };
  },

  /** A non-empty array whose every item passes `item`. */
  list<T>(item: Check<T>): Check<T[]> {
    return (value, name) => {
      if (!Array.isArray(value) || value.length === 0) {
        throw invalidArgument(name, `must be a non-empty array, got ${typeName(value)}`);
      }
      return value.map((v, i) => item(v, `${name}[${i}]`));
    };
  },
} as const;
