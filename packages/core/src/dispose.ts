/*
 * Symbol.asyncDispose arrived in Node 20.4 and 18.18; TypeScript's `await using`
 * looks the symbol up at run time, so define it when missing. This is the
 * only side effect of the package and it is idempotent.
 */
const symbols = Symbol as unknown as { asyncDispose?: symbol; dispose?: symbol };
if (typeof symbols.asyncDispose !== "symbol") {
  Object.defineProperty(Symbol, "asyncDispose", { value: Symbol.for("nodejs.asyncDispose") });
}
if (typeof symbols.dispose !== "symbol") {
  Object.defineProperty(Symbol, "dispose", { value: Symbol.for("nodejs.dispose") });
}

export const asyncDispose: typeof Symbol.asyncDispose = Symbol.asyncDispose;
