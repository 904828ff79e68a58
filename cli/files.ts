/**
 * The CLI's files: reading what the user named, atomic writes, permission and output checks,
 * and the shipped weights beside the CLI.
 *
 * @module
 */

import { BareGPTError, InputError, loadWeights, type Model, WeightsError } from "../mod.ts";
import { log } from "./output.ts";

/** The shipped weights and the default corpus, found beside the CLI (not the working dir). */
export const SHIPPED_WEIGHTS = new URL("../weights/shakespeare.safetensors", import.meta.url);
export const DEFAULT_CORPUS = new URL("../data/tinyshakespeare.txt", import.meta.url);

/** The largest corpus read: its text must fit in a JavaScript string. */
const MAX_CORPUS_BYTES = 500 * 2 ** 20;
/** The largest weights or checkpoint file read: the kernels address 4 GiB. */
const MAX_WEIGHTS_BYTES = 2 ** 32;

/**
 * Reads a file the user named (a URL other than file: is fetched); a missing, unreadable or
 * too large file is an InputError. Devices and pipes are read up to the limit, so `/dev/zero`
 * is an error rather than an out-of-memory crash.
 */
export async function readInput(
  path: string | URL,
  what: string,
  maxBytes = what === "corpus" ? MAX_CORPUS_BYTES : MAX_WEIGHTS_BYTES,
): Promise<Uint8Array> {
  const shown = path instanceof URL ? displayPath(path) : path;
  const tooLarge = (limit = maxBytes) => {
    const mib = limit / 2 ** 20;
    const advice = limit < maxBytes
      ? "save it to a file first"
      : what === "corpus"
      ? "use a smaller text"
      : "it is not a BareGPT model";
    const where = limit < maxBytes ? " from a pipe or device" : "";
    return new InputError(
      `${what} ${shown} is larger than ${mib} MiB, the most BareGPT reads${where}; ${advice}`,
    );
  };
  try {
    if (path instanceof URL && path.protocol !== "file:") {
      const res = await fetch(path);
      if (!res.ok) {
        await res.body?.cancel();
        throw new InputError(`${what} ${shown} could not be fetched: HTTP ${res.status}`);
      }
      if (Number(res.headers.get("content-length") ?? 0) > maxBytes) {
        await res.body?.cancel();
        throw tooLarge();
      }
      const bytes = new Uint8Array(await res.arrayBuffer());
      if (bytes.length > maxBytes) throw tooLarge();
      return bytes;
    }
    using file = await Deno.open(path, { read: true });
    const info = await file.stat();
    if (info.isDirectory) throw new InputError(`${what} ${shown} is a directory; give a file`);
    if (info.isFile) {
      if (info.size > maxBytes) throw tooLarge();
      const bytes = new Uint8Array(info.size);
      let n = 0;
      while (n < bytes.length) {
        const got = await file.read(bytes.subarray(n));
        if (got === null) break;
        n += got;
      }
      return n === bytes.length ? bytes : bytes.subarray(0, n);
    }
    // a device or a pipe: read until its end or the limit (lower for weights: no size to check)
    const limit = what === "corpus" ? maxBytes : Math.min(maxBytes, 2 ** 28);
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const chunk = new Uint8Array(1 << 16);
      const got = await file.read(chunk);
      if (got === null) break;
      total += got;
      if (total > limit) throw tooLarge(limit);
      chunks.push(chunk.subarray(0, got));
    }
    const bytes = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) (bytes.set(c, at), at += c.length);
    return bytes;
  } catch (e) {
    if (e instanceof BareGPTError) throw e;
    if (e instanceof Deno.errors.NotFound) {
      throw new InputError(`${what} ${shown} does not exist; check the path`);
    }
    if (e instanceof Deno.errors.PermissionDenied) {
      throw new InputError(
        `${what} ${shown} is not readable (permission denied); check its permissions`,
      );
    }
    if (e instanceof Deno.errors.IsADirectory || (e as Error).message?.includes("Is a directory")) {
      throw new InputError(`${what} ${shown} is a directory; give a file`);
    }
    if (e instanceof Deno.errors.NotADirectory) {
      throw new InputError(`${what} ${shown} does not exist (a part of its path is a file)`);
    }
    if (e instanceof TypeError && !(path instanceof URL && path.protocol === "file:")) {
      throw new InputError(
        `${what} ${shown} could not be fetched: ${(e as Error).message.split("\n")[0]}`,
      );
    }
    throw e;
  }
}

/** A module-relative URL shown relative to the working directory when possible. */
export function displayPath(url: URL): string {
  if (url.protocol !== "file:") return url.href;
  const here = new URL("../", import.meta.url).pathname;
  return url.pathname.startsWith(here) ? url.pathname.slice(here.length) : url.pathname;
}

/** True when a file exists (a permission error propagates). */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * Writes a file atomically: a temporary file in the same folder, flushed to disk, then a rename,
 * so a failure or a kill at any moment never leaves a truncated file where a good one was.
 */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  // the rename needs read as well as write permission: ask for the folder, never the temporary
  // file (its name changes every run, so granting it would not help)
  await needFolderAccess(folderOf(path), `the folder of ${path}`);
  const tmp = tempPath(path);
  try {
    const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
    try {
      let rest = bytes;
      while (rest.length > 0) rest = rest.subarray(await file.write(rest));
      await file.syncData();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    if (e instanceof Deno.errors.NotCapable) throw e;
    throw new BareGPTError(
      `cannot write ${path}: ${writeFailure(e)}; choose another path or free space`,
    );
  }
}

/** The temporary file of an atomic write of `path` (unique to this process). */
export function tempPath(path: string): string {
  return `${path}.${Deno.pid}.tmp`;
}

/** Why a write failed, in words. */
function writeFailure(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "its folder does not exist";
  if (e instanceof Deno.errors.NotADirectory) return "a part of the path is a file, not a folder";
  if (e instanceof Deno.errors.PermissionDenied) return "permission denied";
  return (e as Error)?.message?.split("\n")[0] ?? String(e);
}

/** The folder of a path ("." for a bare file name). */
export function folderOf(path: string): string {
  const i = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return i < 0 ? "." : i === 0 ? path.slice(0, 1) : path.slice(0, i);
}

/**
 * Makes sure a permission is granted (asking on a terminal where Deno would prompt); otherwise an
 * InputError naming the flag that grants it.
 */
export async function needPermission(
  name: "read" | "write",
  path: string,
  why: string,
): Promise<void> {
  const desc: Deno.PermissionDescriptor = { name, path };
  let { state } = await Deno.permissions.query(desc);
  if (state === "prompt") state = (await Deno.permissions.request(desc)).state;
  if (state !== "granted") {
    throw new InputError(
      `no ${name} permission for ${path} (${why}); run again with --allow-${name}=${path}${
        taskHint(path)
      }`,
    );
  }
}

/**
 * Makes sure of read and write permission on a folder that files are written into atomically
 * (a temporary file, then a rename: Deno's rename needs both), asking on a terminal where Deno
 * would prompt; otherwise one InputError naming both flags for the folder, which a user can grant
 * once for every file written there.
 */
export async function needFolderAccess(dir: string, what: string): Promise<void> {
  const missing: string[] = [];
  for (const name of ["read", "write"] as const) {
    const desc: Deno.PermissionDescriptor = { name, path: dir };
    let { state } = await Deno.permissions.query(desc);
    if (state === "prompt") state = (await Deno.permissions.request(desc)).state;
    if (state !== "granted") missing.push(name);
  }
  if (missing.length > 0) {
    throw new InputError(
      `no ${
        missing.join(" or ")
      } permission for ${dir}, ${what} (an atomic write needs read and write there); run again with --allow-read=${dir} --allow-write=${dir}${
        taskHint(dir)
      }`,
    );
  }
}

/** Options of {@linkcode checkOutput}. */
export interface OutputOptions {
  /** The flag that named the output, for messages (default "--out"). */
  flag?: string;
  /** Create the output's folder (and its parents) when it is missing (default false). */
  createFolder?: boolean;
}

/**
 * Checks before any work that a command can write `out` (and training its checkpoint): read and
 * write permission on the folder, the folder exists (or is created, with `createFolder`) and is
 * writable (a probe file is created and removed). Temporary files that killed runs left beside
 * `out` are removed once a minute old.
 */
export async function checkOutput(out: string, options: OutputOptions = {}): Promise<void> {
  const flag = options.flag ?? "--out";
  const dir = folderOf(out);
  await needFolderAccess(dir, `the folder of ${flag}`);
  if (options.createFolder && !(await exists(dir).catch(() => true))) {
    try {
      await Deno.mkdir(dir, { recursive: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotCapable) throw e;
      throw new InputError(
        `cannot create the folder ${dir} of ${flag}: ${writeFailure(e)}; choose another ${flag}`,
      );
    }
    log(`created folder ${dir}`);
  }
  const probe = tempPath(out);
  try {
    await Deno.writeFile(probe, new Uint8Array(0));
    await Deno.remove(probe).catch(() => {});
  } catch (e) {
    await Deno.remove(probe).catch(() => {});
    if (e instanceof Deno.errors.NotCapable) throw e;
    throw new InputError(`cannot write ${out}: ${writeFailure(e)}; choose another ${flag}`);
  }
  const base = out.slice(Math.max(out.lastIndexOf("/"), out.lastIndexOf("\\")) + 1);
  const stale = new RegExp(`^${escapeRegExp(base)}(\\.ckpt)?\\.\\d+\\.tmp$`);
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.isFile || !stale.test(entry.name)) continue;
      const path = `${dir}/${entry.name}`;
      // a minute old: not the write in progress of another run into the same folder
      const age = Date.now() - ((await Deno.stat(path)).mtime?.getTime() ?? Date.now());
      if (age > 60_000) await Deno.remove(path).catch(() => {});
    }
  } catch { /* best effort */ }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** A weights file (undefined: the shipped weights) as a model; errors name the file. */
export async function loadWeightsFile(path: string | undefined): Promise<Model> {
  const source = path ?? SHIPPED_WEIGHTS;
  const bytes = await readInput(source, "weights file");
  try {
    return await loadWeights(bytes);
  } catch (e) {
    if (!(e instanceof WeightsError)) throw e;
    const shown = source instanceof URL ? displayPath(source) : source;
    throw new WeightsError(`${shown}: ${e.message}`, { options: [...e.options] });
  }
}

/**
 * For a relative path outside the folders the deno tasks may use, how to get there from a task
 * (a task takes no permission flags): "" for a path inside them, or an absolute one.
 */
export function taskHint(path: string): string {
  // an absolute path is someone's own deno run; a relative one may be a task run in the checkout
  const inside = /^(\.\/)?(data|weights|out)(\/|$)/.test(path) || /^([/\\]|[a-z]:)/i.test(path);
  return inside ? "" : " (the deno tasks read only data/, weights/ and out/ and write only " +
    "weights/ and out/: put the file there, or run cli.ts with deno run and these flags)";
}
