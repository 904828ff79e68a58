/**
 * One writer per output: the lock file `<out>.lock` that a run writing `out` holds while it runs
 * (see {@linkcode probeLock}).
 *
 * @module
 */

import { InputError } from "../mod.ts";
import { nonRegularKind, writeFailure } from "./files.ts";
import { log } from "./output.ts";

/** The lock file of an output: `<out>.lock`. */
export function lockPath(out: string): string {
  return `${out}.lock`;
}

/** A held lock of an output; `release` (synchronous, so a signal handler can call it) frees it. */
export interface OutputLock {
  readonly path: string;
  release(): void;
}

const LOCK_TEXT = /^baregpt lock: pid (\d+), started (\S+)\n$/;
/** A lock file still empty this young is being created by a live run. */
const LOCK_BIRTH_MS = 10_000;

/**
 * One writer per output. A run writing `out` holds `<out>.lock`: a file created with `createNew`
 * that holds its pid and start time, with an exclusive advisory lock (flock) on it for as long as
 * the process lives. The operating system drops that lock when the process ends in any way, kill
 * -9 included, so a lock file whose lock can be taken is stale, whatever pid it names: it is
 * removed and taken over with a note. No permission beyond the output folder's is needed.
 *
 * `probeLock` fails at once (an InputError) when a live run holds the lock; it takes nothing.
 */
export async function probeLock(out: string, flag = "--out"): Promise<void> {
  const path = lockPath(out);
  const file = await openLock(path);
  if (file === undefined) return;
  try {
    const free = await tryLock(file, false);
    if (free === false) throw await busy(file, path, out, flag);
  } finally {
    file.close();
  }
}

/**
 * Takes the lock of `out` (see {@linkcode probeLock}): an InputError when another live run holds
 * it; a stale lock (its process is gone) is taken over. Where the file system has no advisory
 * locks, an existing lock file is refused unless `takeOver` (--force, --resume) is set.
 */
export async function acquireLock(
  out: string,
  options: { flag?: string; takeOver?: boolean } = {},
): Promise<OutputLock> {
  const flag = options.flag ?? "--out";
  const path = lockPath(out);
  for (let attempt = 0; attempt < 20; attempt++) {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { write: true, createNew: true });
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) {
        if (e instanceof Deno.errors.NotCapable) throw e;
        throw new InputError(`cannot write ${path}: ${writeFailure(e)}; choose another ${flag}`);
      }
      const old = await openLock(path);
      if (old === undefined) continue; // removed meanwhile: try again
      try {
        const free = await retryLock(old);
        if (free === false) throw await busy(old, path, out, flag);
        const [onDisk, held] = [await Deno.lstat(path).catch(() => undefined), await old.stat()];
        if (onDisk?.ino !== held.ino || onDisk?.dev !== held.dev) continue; // replaced meanwhile
        const text = await readText(old);
        const young = Date.now() - (held.mtime?.getTime() ?? 0) < LOCK_BIRTH_MS;
        if (text === "" && young) {
          // a live run writes its pid within moments of creating the file; one killed in that
          // moment leaves it empty for good: look again shortly before calling it stale
          await new Promise((resolve) => setTimeout(resolve, 300));
          const now = await Deno.lstat(path).catch(() => undefined);
          if (now?.ino !== held.ino || now?.dev !== held.dev) continue; // replaced meanwhile
          if ((await readText(old)) !== "") throw await busy(old, path, out, flag);
        }
        if (text !== "" && !LOCK_TEXT.test(text)) {
          throw new InputError(
            `${path} exists and is not a lock file of BareGPT; remove it or choose another ${flag}`,
          );
        }
        const pid = text.match(LOCK_TEXT)?.[1];
        if (free === undefined && !options.takeOver) {
          // no advisory locks here: whether its run is alive cannot be told
          throw new InputError(
            `another run (pid ${
              pid ?? "unknown"
            }) may be writing ${out} (${path} exists); wait for it, or delete ${path} if no run is active`,
          );
        }
        await Deno.remove(path);
        log(
          `note: took over the lock ${path} of pid ${pid ?? "unknown"}, ${
            free === undefined ? "assumed" : "no longer"
          } running`,
        );
      } finally {
        old.close();
      }
      continue;
    }
    try {
      if ((await retryLock(file)) === false) throw new Error("the new lock file is locked");
      await file.write(
        new TextEncoder().encode(
          `baregpt lock: pid ${Deno.pid}, started ${new Date().toISOString()}\n`,
        ),
      );
    } catch (e) {
      file.close();
      await Deno.remove(path).catch(() => {});
      if (e instanceof Deno.errors.NotCapable) throw e;
      throw new InputError(`cannot write ${path}: ${writeFailure(e)}; choose another ${flag}`);
    }
    const held = await file.stat();
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      globalThis.removeEventListener("unload", release);
      try {
        // remove it while still holding it, and only if it is still this run's file
        const onDisk = Deno.lstatSync(path);
        if (onDisk.ino === held.ino && onDisk.dev === held.dev) Deno.removeSync(path);
      } catch { /* gone already */ }
      try {
        file.close();
      } catch { /* closed */ }
    };
    globalThis.addEventListener("unload", release);
    return { path, release };
  }
  throw new InputError(`cannot take the lock ${path}: other runs keep taking it; try again`);
}

/** Opens an existing lock file to read and lock (undefined: there is none). */
async function openLock(path: string): Promise<Deno.FsFile | undefined> {
  const kind = await nonRegularKind(path);
  if (kind !== undefined) {
    throw new InputError(
      `the lock file ${path} is ${kind}, not a regular file; remove it or choose another --out`,
    );
  }
  try {
    return await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/** Tries the advisory lock: true taken, false held by another process, undefined unsupported. */
async function tryLock(file: Deno.FsFile, exclusive: boolean): Promise<boolean | undefined> {
  try {
    return await file.tryLock(exclusive);
  } catch {
    return undefined;
  }
}

/** An exclusive tryLock, again for a moment (a probing run holds a shared lock for microseconds). */
async function retryLock(file: Deno.FsFile): Promise<boolean | undefined> {
  for (let i = 0;; i++) {
    const got = await tryLock(file, true);
    if (got !== false || i >= 20) return got;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The error of a lock held by a live run. */
async function busy(file: Deno.FsFile, path: string, out: string, flag: string) {
  const pid = (await readText(file).catch(() => "")).match(LOCK_TEXT)?.[1];
  return new InputError(
    `another run (pid ${
      pid ?? "starting"
    }) is writing ${out} (it holds ${path}); wait for it or choose another ${flag}`,
  );
}

/** The text of a small file from its start (a lock file: at most a few hundred bytes). */
async function readText(file: Deno.FsFile): Promise<string> {
  await file.seek(0, Deno.SeekMode.Start);
  const buf = new Uint8Array(512);
  let n = 0;
  for (;;) {
    const got = await file.read(buf.subarray(n));
    if (got === null || got === 0) break;
    n += got;
    if (n === buf.length) break;
  }
  return new TextDecoder().decode(buf.subarray(0, n));
}
