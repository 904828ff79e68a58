/// <reference lib="dom" />
/**
 * The training run kept in the origin private file system (OPFS), so that a reload loses
 * nothing: the run's description (its settings, the text's name and the loss curves so far),
 * its text, the base model when fine-tuning, and the last checkpoint (the library's
 * `trainer.checkpoint()` bytes). Each file is written through `createWritable()`, which writes
 * a temporary file and replaces the old one only when it is closed: a reload in the middle of a
 * write keeps the previous checkpoint.
 *
 * @module
 */

import type { LinePoint } from "../mod.ts";
import type { FormSettings } from "./train_ui.ts";

/** What a run is, as saved beside its checkpoint. */
export interface SavedRun {
  settings: FormSettings;
  /** The size menu's choice (tiny, default, custom or finetune). */
  size: string;
  /** The text's name, as the command's `--data` names it. */
  dataName: string;
  /** The base model's file name when fine-tuning (its bytes are saved too). */
  initName?: string;
  /** The kernels the run trains on, "webgpu" too (a continued run uses the same to match). */
  tier: string;
  /** The loss curves up to the checkpoint. */
  curves?: { train: LinePoint[]; val: LinePoint[] };
  /** The checkpoint's step (0: none yet). */
  step: number;
}

const FILES = {
  run: "baregpt-run.json",
  text: "baregpt-run.txt",
  init: "baregpt-run-init.safetensors",
  checkpoint: "baregpt-run.ckpt",
};

async function folder(): Promise<FileSystemDirectoryHandle | null> {
  try {
    return await navigator.storage.getDirectory();
  } catch {
    return null; // no OPFS here (an old browser, or storage blocked): runs are not kept
  }
}

async function write(name: string, data: Uint8Array | string): Promise<void> {
  const dir = await folder();
  if (dir === null) return;
  const handle = await dir.getFileHandle(name, { create: true });
  const writable = await handle.createWritable();
  try {
    await writable.write(typeof data === "string" ? data : new Blob([data as BlobPart]));
    await writable.close();
  } catch (e) {
    await writable.abort().catch(() => {});
    throw e;
  }
}

async function read(name: string): Promise<File | null> {
  const dir = await folder();
  if (dir === null) return null;
  try {
    return await (await dir.getFileHandle(name)).getFile();
  } catch {
    return null;
  }
}

/** Whether this browser keeps runs (OPFS with writable files). */
export async function opfsAvailable(): Promise<boolean> {
  const dir = await folder();
  return dir !== null && "createWritable" in FileSystemFileHandle.prototype;
}

/** Saves a new run (its text and base model; no checkpoint yet), replacing any other. */
export async function saveRun(run: SavedRun, text: string, init?: Uint8Array): Promise<void> {
  await forgetRun();
  await write(FILES.text, text);
  if (init !== undefined) await write(FILES.init, init);
  await write(FILES.run, JSON.stringify(run));
}

/** Saves a checkpoint of the run, then its description (step and curves). */
export async function saveCheckpoint(run: SavedRun, bytes: Uint8Array): Promise<void> {
  await write(FILES.checkpoint, bytes);
  await write(FILES.run, JSON.stringify(run));
}

/** The saved run, if any: its description, text, base model and last checkpoint. */
export async function loadRun(): Promise<
  { run: SavedRun; text: string; init?: Uint8Array; checkpoint?: Uint8Array } | null
> {
  const runFile = await read(FILES.run), textFile = await read(FILES.text);
  if (runFile === null || textFile === null) return null;
  let run: SavedRun;
  try {
    run = JSON.parse(await runFile.text());
  } catch {
    return null;
  }
  const bytes = async (name: string) => {
    const f = await read(name);
    return f === null ? undefined : new Uint8Array(await f.arrayBuffer());
  };
  return {
    run,
    text: await textFile.text(),
    init: run.initName === undefined ? undefined : await bytes(FILES.init),
    checkpoint: run.step > 0 ? await bytes(FILES.checkpoint) : undefined,
  };
}

/** Removes the saved run (it finished, or was discarded). */
export async function forgetRun(): Promise<void> {
  const dir = await folder();
  if (dir === null) return;
  for (const name of Object.values(FILES)) await dir.removeEntry(name).catch(() => {});
}
