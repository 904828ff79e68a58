// Where Debian's Chromium is and the flags the browser tests start it with, and whether it is
// there (imported by the test modules; the drivers, which import playwright, get both in their job).

/** Chromium's path: CHROMIUM_PATH, or Debian's. */
export const CHROMIUM = Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";

/** True under CI, where a missing Chromium fails the browser tests instead of skipping them. */
export const CI = Deno.env.get("CI") === "true";

/** Chromium's flags: headless, no sandbox (CI containers run as root), nothing reaching out. */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
];

/**
 * The same flags with WebGPU on: --disable-gpu leaves no hardware adapter, so Chromium offers
 * SwiftShader's (software; vendor "google", architecture "swiftshader"). Without
 * `--enable-unsafe-webgpu` headless Chromium on Linux has no adapter at all.
 */
export const CHROMIUM_WEBGPU_ARGS = [...CHROMIUM_ARGS, "--enable-unsafe-webgpu"];

/**
 * True when Chromium is there; otherwise says so, as the skip of test `name` (or, with CI=true,
 * as the failure to come).
 */
export async function chromiumPresent(name: string): Promise<boolean> {
  const present = await Deno.stat(CHROMIUM).then((s) => s.isFile, () => false);
  if (!present) {
    const reason =
      `Chromium not found at ${CHROMIUM} (install Debian's chromium, or set CHROMIUM_PATH)`;
    if (CI) console.error(`${name}: ${reason}; CI=true, so it fails`);
    else console.log(`${name} skipped: ${reason}`);
  }
  return present;
}

/** The repository's root (the working folder of the commands below). */
const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname);

/** Runs Deno with `args` in the repository's root; its stdout, or an Error naming `what`. */
export async function runDeno(args: string[], what: string): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  if (out.code !== 0) throw new Error(`${what} failed (exit ${out.code}): ${stderr}`);
  return new TextDecoder().decode(out.stdout);
}
