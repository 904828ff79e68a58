/**
 * `deno task data`: puts the default corpus, Tiny Shakespeare, at data/tinyshakespeare.txt.
 * Copies it from ../shared/data when that folder exists beside the checkout, otherwise downloads
 * it from its public source; either way the sha256 must match.
 *
 * @module
 */

const SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed";
const SOURCE =
  "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt";
const target = new URL("../data/tinyshakespeare.txt", import.meta.url);
const shared = new URL("../../shared/data/tinyshakespeare.txt", import.meta.url);

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function readIfExists(url: URL): Promise<Uint8Array | null> {
  try {
    return await Deno.readFile(url);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

async function main(): Promise<number> {
  const existing = await readIfExists(target);
  if (existing && await sha256(existing) === SHA256) {
    console.error("data/tinyshakespeare.txt is already in place");
    return 0;
  }
  let bytes = await readIfExists(shared);
  let from = "../shared/data/tinyshakespeare.txt";
  if (bytes === null) {
    from = SOURCE;
    console.error(`downloading ${SOURCE}`);
    try {
      const res = await fetch(SOURCE);
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      bytes = new Uint8Array(await res.arrayBuffer());
    } catch (e) {
      console.error(
        `error: could not download the corpus (${
          (e as Error).message
        }); put Tiny Shakespeare at data/tinyshakespeare.txt by hand`,
      );
      return 1;
    }
  }
  const digest = await sha256(bytes);
  if (digest !== SHA256) {
    console.error(`error: ${from} has sha256 ${digest}, expected ${SHA256}; the copy is damaged`);
    return 1;
  }
  await Deno.mkdir(new URL("../data/", import.meta.url), { recursive: true });
  const tmp = new URL("../data/tinyshakespeare.txt.tmp", import.meta.url);
  await Deno.writeFile(tmp, bytes);
  await Deno.rename(tmp, target);
  console.error(
    `data/tinyshakespeare.txt: ${
      bytes.length.toLocaleString("en-US")
    } bytes from ${from}, sha256 verified`,
  );
  return 0;
}

if (import.meta.main) Deno.exit(await main());
