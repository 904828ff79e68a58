/**
 * The pieces of `train` that read best on their own: resuming a checkpoint (its errors name the
 * path), the worker threads' permission, the learning-rate schedule in words, missing folders.
 *
 * @module
 */

import { BareGPTError, InputError, type KernelChoice, type Trainer, WeightsError } from "../mod.ts";
import { exists, folderOf, needPermission, readInput } from "./files.ts";
import { log } from "./output.ts";

/** The folders of `dir` and above it that do not exist, deepest first. */
export async function missingFolders(dir: string): Promise<string[]> {
  const missing: string[] = [];
  for (let d = dir; !(await exists(d).catch(() => true)); d = folderOf(d)) {
    missing.push(d);
    if (folderOf(d) === d) break;
  }
  return missing;
}

/** Restores a checkpoint into the trainer; its errors name the checkpoint's path. */
export async function resumeFrom(
  trainer: Trainer,
  ckptPath: string,
  tier: KernelChoice,
): Promise<void> {
  const bytes = await readInput(ckptPath, "checkpoint");
  let r;
  try {
    r = trainer.restore(bytes);
  } catch (e) {
    if (!(e instanceof BareGPTError) || !/^the checkpoint\b/.test(e.message)) throw e;
    const message = e.message.replace(/^the checkpoint/, `checkpoint ${ckptPath}`);
    const options = { options: [...e.options], cause: e };
    throw e instanceof WeightsError
      ? new WeightsError(message, options)
      : e instanceof InputError
      ? new InputError(message, options)
      : new BareGPTError(message, options);
  }
  const { threads, kernels } = r;
  if (
    (threads !== undefined && threads !== String(trainer.threads)) ||
    (kernels !== undefined && kernels !== tier)
  ) {
    log(
      `note: the checkpoint was made on ${threads} thread(s) with ${kernels} kernels and this run uses ${trainer.threads} with ${tier}; the result will differ in the last bits from an uninterrupted run`,
    );
  }
  log(`resumed from ${ckptPath} at step ${r.step}`);
}

/**
 * Workers load the library's modules (lib/, beside mod.ts) as the main program did: that needs
 * read permission for lib/ (net permission for its host when run from a URL). Refuse clearly
 * when it is missing.
 */
export async function checkWorkerPermission(threads: number): Promise<void> {
  const lib = new URL("../lib/", import.meta.url);
  const alternative = "or pass --threads 1";
  if (lib.protocol === "file:") {
    const path = decodeURIComponent(lib.pathname).replace(/\/$/, "");
    await needPermission("read", path, `training on ${threads} threads starts workers from it`)
      .catch((e) => {
        throw e instanceof InputError ? new InputError(`${e.message}, ${alternative}`) : e;
      });
  } else if (lib.protocol === "http:" || lib.protocol === "https:") {
    const desc: Deno.PermissionDescriptor = { name: "net", host: lib.host };
    let { state } = await Deno.permissions.query(desc);
    if (state === "prompt") state = (await Deno.permissions.request(desc)).state;
    if (state !== "granted") {
      throw new InputError(
        `no net permission for ${lib.host} (training on ${threads} threads starts workers from it); run again with --allow-net=${lib.host}, ${alternative}`,
      );
    }
  }
}

/**
 * The learning-rate schedule in words. The library warms up linearly over `warmup` steps (step i
 * uses lr * (i + 1) / warmup), capped at the run's length: a warmup as long as the run or longer
 * reaches the peak at the last step and never decays. Say what actually runs.
 */
export function schedule(
  steps: number,
  lr: number,
  minLr: number,
  warmup: number,
  decay: string,
  cooldown = 1,
): string {
  const stable = cooldown < 1 ? `, the last ${Math.round(cooldown * 100)}% decaying` : "";
  if (warmup < steps) return `lr ${lr} -> ${minLr} (warmup ${warmup}, ${decay} decay${stable})`;
  const capped = warmup > steps ? `, capped at the ${steps} steps` : "";
  return `lr warming up to ${lr} over the whole run (warmup ${warmup}${capped}): the peak is reached at the last step, no decay`;
}

/** A fact read from a file, printable: quoted and escaped unless it is plain text. */
export function shown(text: string): string {
  return /^[\x20-\x7e]*$/.test(text) ? text : JSON.stringify(text);
}

export function defaultThreads(): number {
  return Math.max(1, Math.min(navigator.hardwareConcurrency ?? 1, 64));
}
