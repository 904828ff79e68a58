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
    // a regular file of known size (a /proc file says 0 and is read as a stream below)
    if (info.isFile && info.size > 0) {
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
    if (e instanceof Deno.errors.FilesystemLoop || /symbolic links/i.test((e as Error).message)) {
      throw new InputError(`${what} ${shown} is a symlink loop; give a real file`);
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
 * so a failure or a kill at any moment never leaves a truncated file where a good one was. Only
 * a regular file (or nothing) is ever replaced: a device, FIFO, socket, folder or symbolic link at
 * `path` is refused (an InputError) and left as it was.
 */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  // the rename needs read as well as write permission: ask for the folder, never the temporary
  // file (its name changes every run, so granting it would not help)
  await needFolderAccess(folderOf(path), `the folder of ${path}`);
  const kind = await nonRegularKind(path);
  if (kind !== undefined) {
    throw new InputError(
      `cannot write ${path}: it is ${kind}, not a regular file; choose another path`,
    );
  }
  const tmp = tempPath(path);
  let created = false;
  try {
    const file = await createTemp(tmp, path);
    created = true;
    try {
      let rest = bytes;
      while (rest.length > 0) rest = rest.subarray(await file.write(rest));
      await file.syncData();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    if (created) await Deno.remove(tmp).catch(() => {});
    if (e instanceof BareGPTError || e instanceof Deno.errors.NotCapable) throw e;
    throw new BareGPTError(
      `cannot write ${path}: ${writeFailure(e)}; choose another path or free space`,
    );
  }
}

/**
 * Creates the temporary file `tmp` of a write of `path` without following a link or opening a
 * device: a leftover regular file of the same name (a killed process had this pid) is replaced;
 * anything else in the way is a BareGPTError, left as it was.
 */
async function createTemp(tmp: string, path: string): Promise<Deno.FsFile> {
  for (let attempt = 0;; attempt++) {
    try {
      return await Deno.open(tmp, { write: true, createNew: true });
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists) || attempt > 0) throw e;
      const kind = await nonRegularKind(tmp);
      if (kind !== undefined) {
        throw new BareGPTError(
          `cannot write ${path}: its temporary file ${tmp} is in the way (${kind}, not a regular file); choose another path or remove it`,
        );
      }
      await Deno.remove(tmp);
    }
  }
}

/**
 * What is at `path` when it is not a regular file ("a character device", "a symbolic link"...),
 * from `Deno.lstat` (a link is never followed); undefined for a regular file or nothing (or a
 * path whose folder is missing: writing it fails later with its own message).
 */
export async function nonRegularKind(path: string): Promise<string | undefined> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) throw e;
    return undefined;
  }
  if (info.isSymlink) {
    const target = await Deno.readLink(path).catch(() => undefined);
    return target === undefined ? "a symbolic link" : `a symbolic link (to ${target})`;
  }
  if (info.isFile) return undefined;
  if (info.isDirectory) return "a folder";
  if (info.isCharDevice) return "a character device";
  if (info.isBlockDevice) return "a block device";
  if (info.isFifo) return "a FIFO (named pipe)";
  if (info.isSocket) return "a socket";
  return "a special file";
}

/**
 * True when `written` and `read` name the same existing file, through symbolic links (real
 * paths) or hard links (device and inode). A path that is missing or not readable here is no
 * match (reading it fails later with its own message).
 */
export async function sameFile(written: string, read: string | URL): Promise<boolean> {
  if (read instanceof URL && read.protocol !== "file:") return false;
  let a: Deno.FileInfo, b: Deno.FileInfo;
  try {
    [a, b] = [await Deno.stat(written), await Deno.stat(read)];
  } catch {
    return false;
  }
  if (a.ino !== null && b.ino !== null && a.dev === b.dev && a.ino === b.ino) return true;
  try {
    return (await Deno.realPath(written)) === (await Deno.realPath(read));
  } catch {
    return false;
  }
}

/** The temporary file of an atomic write of `path` (unique to this process). */
export function tempPath(path: string): string {
  return `${path}.${Deno.pid}.tmp`;
}

/** Why a write failed, in words. */
export function writeFailure(e: unknown): string {
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
  /** Other files the command writes beside the output: what each is ("its checkpoint"), path. */
  companions?: [string, string][];
  /** The files the command reads: flag, path (undefined: not given). None may be written. */
  inputs?: [string, string | URL | undefined][];
}

/**
 * Checks before any work that a command can write `out` (and its companions: a checkpoint, a
 * lock): read and write permission on the folder; no written path (nor its temporary file) is a
 * file the command reads, through links; each is absent or a regular file (a device, FIFO,
 * socket, folder or symbolic link is refused, and left as it was); the folder exists (or is
 * created, with `createFolder`) and is writable (a probe file is created and removed). Temporary
 * files that killed runs left beside `out` are removed once a minute old.
 */
export async function checkOutput(out: string, options: OutputOptions = {}): Promise<void> {
  const flag = options.flag ?? "--out";
  const dir = folderOf(out);
  await needFolderAccess(dir, `the folder of ${flag}`);
  const written: [string, string][] = [["", out], ...(options.companions ?? [])];
  const subject = (what: string, path: string) =>
    what === "" ? `${flag} ${out}` : `${flag} ${out} would write ${what} ${path}, which`;
  for (const [what, path] of written) {
    for (const [inFlag, input] of options.inputs ?? []) {
      if (input === undefined) continue;
      for (
        const [w, p] of [[what, path], [
          `${what === "" ? "its" : `${what}'s`} temporary file`,
          tempPath(path),
        ]]
      ) {
        if (await sameFile(p, input)) {
          throw new InputError(`${subject(w, p)} is the file of ${inFlag}; choose another ${flag}`);
        }
      }
    }
  }
  for (const [what, path] of written) {
    for (
      const [w, p] of [[what, path], [
        `${what === "" ? "its" : `${what}'s`} temporary file`,
        tempPath(path),
      ]]
    ) {
      const kind = await nonRegularKind(p);
      if (kind === "a folder" && w === "") {
        throw new InputError(`${flag} ${out} is a folder; give the path of a file`);
      }
      if (kind !== undefined) {
        throw new InputError(
          `${subject(w, p)} is ${kind}, not a regular file; ${
            w === "" ? "choose a file path" : `remove it or choose another ${flag}`
          }`,
        );
      }
    }
  }
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
  let created = false;
  try {
    (await createTemp(probe, out)).close();
    created = true;
    await Deno.remove(probe).catch(() => {});
  } catch (e) {
    if (created) await Deno.remove(probe).catch(() => {});
    if (e instanceof Deno.errors.NotCapable) throw e;
    if (e instanceof BareGPTError) throw new InputError(e.message);
    throw new InputError(`cannot write ${out}: ${writeFailure(e)}; choose another ${flag}`);
  }
  // a minute old: not the write in progress of another run into the same folder
  await removeStaleTemps(out, 60_000);
}

/**
 * Removes the temporary files that killed runs left beside `out` (`out.PID.tmp`,
 * `out.ckpt.PID.tmp`) once they are `minAgeMs` old; 0 (all of them but this process's) when this
 * run holds the output's lock, so no other run can be writing them.
 */
export async function removeStaleTemps(out: string, minAgeMs: number): Promise<void> {
  const dir = folderOf(out);
  const base = out.slice(Math.max(out.lastIndexOf("/"), out.lastIndexOf("\\")) + 1);
  const stale = new RegExp(`^${escapeRegExp(base)}(\\.ckpt)?\\.(\\d+)\\.tmp$`);
  try {
    for await (const entry of Deno.readDir(dir)) {
      const m = entry.name.match(stale);
      if (!entry.isFile || m === null || Number(m[2]) === Deno.pid) continue;
      const path = `${dir}/${entry.name}`;
      const age = Date.now() - ((await Deno.lstat(path)).mtime?.getTime() ?? Date.now());
      if (age >= minAgeMs) await Deno.remove(path).catch(() => {});
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
