import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import {
  Application,
  Converter,
  OptionDefaults,
  ReflectionKind,
  type TypeDocOptions,
} from "typedoc";
import { MarkdownRendererEvent, type PluginOptions } from "typedoc-plugin-markdown";
import { docsRoot } from "./samples.js";

/*
 * The API reference, generated at build time by TypeDoc (with
 * typedoc-plugin-markdown) from each public entry point (every "exports"
 * path of the published packages), into docs/api/ (git-ignored). It is
 * rebuilt on every docs build, so it cannot drift from the code. The one
 * page there that is written by hand, api/index.md (in git), is the way in:
 * it starts with what users call and links into the generated pages.
 */

export const apiDir: string = join(docsRoot, "api");

/** The hand-written landing page of the reference, kept across generations. */
const landingPage = "index.md";

/**
 * TypeDoc's own list of modules: written (TypeDoc always writes an entry
 * page) under a name no module takes, then deleted, since the landing page
 * replaces it.
 */
const typedocEntry = "typedoc-modules";

/**
 * The order of the sections of a module page. The first groups are the
 * `@group` tags in packages/core/src, in the order a user meets them
 * (client, lease, errors, options, coordination), then what backend authors
 * and observers need, then each backend's factory (`@group Factory`);
 * untagged members follow by kind, functions first. Class and interface members keep
 * TypeDoc's order (constructors, properties, methods).
 */
const groupOrder = [
  "Client",
  "Leases",
  "Errors",
  "Options",
  "Several keys",
  "Who holds it",
  "Leader election",
  "Web Locks API",
  "Observability",
  "Backend contract",
  // Re-exports (Backend, Capabilities ... on @locks/core/backend, documented on @locks/core) next to the contract.
  "References",
  // The toolkit of @locks/core/backend, by what a backend needs it for.
  "Option parsing",
  "Keys",
  "Waiting",
  "Keep-alive",
  "Error helpers",
  // @locks/core/history: recording holds before checking them.
  "Recording",
  "Checking",
  // @locks/cli: the command, then what it parses.
  "Command",
  "Backend URLs",
  "Durations",
  "Usage errors",
  "Factory",
  "Functions",
  "Classes",
  "Interfaces",
  "Type Aliases",
  "Variables",
  "Constructors",
  "Properties",
  "Accessors",
  "Methods",
  "*",
];

/** Deletes what the last generation wrote into docs/api/, but the landing page. */
function clearGenerated(): void {
  if (!existsSync(apiDir)) return;
  for (const entry of readdirSync(apiDir)) {
    if (entry !== landingPage) rmSync(join(apiDir, entry), { recursive: true, force: true });
  }
}

/** The published packages, under packages/. */
const published = ["core", "thread", "file", "redis", "etcd", "postgres", "mysql", "cli"] as const;

const packagesDir = join(docsRoot, "..", "packages");

/**
 * The public entry points, import path -> source file: every path of each
 * published package's "exports" (but ./package.json), read through its
 * "@locks/source" condition, so that an entry point added or moved in a
 * package.json is documented without a change here. `@locks/core` is split
 * by reader: users, backend authors (`/backend`), tests (`/history`,
 * `/conformance`).
 */
export function entryPoints(): Map<string, string> {
  const entries = new Map<string, string>();
  for (const dir of published) {
    const manifestPath = join(packagesDir, dir, "package.json");
    if (!existsSync(manifestPath)) {
      entries.set(`@locks/${dir}`, join(packagesDir, dir, "src", "index.ts"));
      continue;
    }
    const manifest = JSON.parse(readFileSync(manifestPath, "utf8")) as {
      name: string;
      exports: Record<string, string | Record<string, string>>;
    };
    for (const [subpath, target] of Object.entries(manifest.exports)) {
      if (subpath === "./package.json") continue;
      const source = typeof target === "string" ? undefined : target["@locks/source"];
      if (source === undefined) {
        throw new Error(`${manifest.name}: "exports" ${subpath} has no "@locks/source" condition`);
      }
      const name = subpath === "." ? manifest.name : `${manifest.name}/${subpath.slice(2)}`;
      entries.set(name, resolve(packagesDir, dir, source));
    }
  }
  return entries;
}

/** The entry points whose source exists (path -> name), and the names of those that do not. */
export function availableEntryPoints(): { present: Map<string, string>; missing: string[] } {
  const present = new Map<string, string>();
  const missing: string[] = [];
  for (const [name, path] of entryPoints()) {
    if (existsSync(path)) present.set(path, name);
    else missing.push(name);
  }
  return { present, missing };
}

/** Runs TypeDoc into docs/api/ and returns the modules documented and those skipped. */
export async function generateApi(): Promise<{ documented: string[]; missing: string[] }> {
  const { present, missing } = availableEntryPoints();
  clearGenerated();
  const options: Partial<TypeDocOptions & PluginOptions> = {
    entryPoints: [...present.keys()],
    entryPointStrategy: "resolve",
    tsconfig: join(docsRoot, "tsconfig.api.json"),
    plugin: ["typedoc-plugin-markdown"],
    out: apiDir,
    name: "API reference",
    readme: "none",
    // Type errors are the packages' own typecheck's business; the reference is built regardless.
    skipErrorChecking: true,
    disableSources: true,
    excludePrivate: true,
    excludeInternal: true,
    // Members a class inherits from the platform (Error's stack, captureStackTrace ...) are not ours to document.
    excludeExternals: true,
    // TypeDoc would clear the directory, landing page included: clearGenerated() did the rest.
    cleanOutputDir: false,
    groupOrder,
    // Within a group: the function that makes a thing before the types it returns (createLocks, then Locks).
    // Errors: the classes before isLockError.
    kindSortOrder: ["Class", "Function", "Interface", "TypeAlias", "Variable"],
    // `@sortStrategy source-order` keeps Locks' and Lease's members in the order they are declared (acquire first).
    notRenderedTags: [...OptionDefaults.notRenderedTags, "@sortStrategy"],
    logLevel: "Warn",
    outputFileStrategy: "modules",
    excludeScopesInPaths: true,
    entryFileName: typedocEntry,
    hidePageHeader: true,
    hideBreadcrumbs: true,
    useCodeBlocks: true,
    parametersFormat: "table",
    interfacePropertiesFormat: "table",
    enumMembersFormat: "table",
    typeDeclarationFormat: "table",
  };
  const app = await Application.bootstrapWithPlugins(options);
  // TypeDoc names modules after their path ("core/src"); the reference uses package names.
  app.converter.on(Converter.EVENT_CREATE_DECLARATION, (context, reflection) => {
    if (!reflection.kindOf(ReflectionKind.Module)) return;
    const symbol = context.getSymbolFromReflection(reflection);
    const file = symbol?.declarations?.[0]?.getSourceFile().fileName;
    const name = file === undefined ? undefined : present.get(resolve(file));
    if (name !== undefined) reflection.name = name;
  });
  const project = await app.convert();
  if (project === undefined) throw new Error("TypeDoc could not convert the packages' sources");
  // The router reserves a file name for every member too, case-insensitively,
  // though members get no page of their own here: @locks/core's `Backend`
  // would take "core/backend" from the module @locks/core/backend, which
  // would land in "core/backend-1.md". Sub-path modules claim their names
  // first; once the pages are routed, the listing gets its order back.
  const isSubpath = (name: string) => name.split("/").length > 2;
  const restore: Array<() => void> = [];
  for (const modules of [project.children, project.childrenIncludingDocuments]) {
    if (modules === undefined) continue;
    const listed = [...modules];
    modules.sort((a, b) => Number(isSubpath(b.name)) - Number(isSubpath(a.name)));
    restore.push(() => modules.splice(0, modules.length, ...listed));
  }
  app.renderer.on(MarkdownRendererEvent.BEGIN, () => {
    for (const undo of restore) undo();
  });
  await app.generateOutputs(project);
  if (app.logger.hasErrors()) throw new Error("TypeDoc reported errors");
  rmSync(join(apiDir, `${typedocEntry}.md`), { force: true });
  if (!existsSync(join(apiDir, landingPage))) {
    throw new Error(`the hand-written ${relative(docsRoot, join(apiDir, landingPage))} is missing`);
  }
  const documented = (project.children ?? []).map((m) => m.name).sort();
  for (const [path, name] of present) {
    if (!documented.includes(name)) {
      throw new Error(`TypeDoc did not document ${name} (${relative(docsRoot, path)})`);
    }
    // Pages link to /api/core/backend and the like: the page must be where its name says.
    const page = join(apiDir, `${name.replace(/^@locks\//, "")}.md`);
    if (!existsSync(page)) {
      throw new Error(`TypeDoc wrote ${name} elsewhere than ${relative(docsRoot, page)}`);
    }
  }
  return { documented, missing };
}
