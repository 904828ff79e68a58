// Every script in examples/ runs as a user would run it (deno run, scoped permissions), on small
// settings and tiny corpora written to a temporary folder.

import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert";
import { loadWeights } from "../mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const SHIPPED = `${ROOT}weights/shakespeare.safetensors`;

/** Runs an example with read access to the repository and `dir`, write access to `dir`. */
async function runExample(name: string, args: string[], dir: string, cwd?: string) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      `--allow-read=${ROOT},${dir}`,
      `--allow-write=${dir}`,
      `${ROOT}examples/${name}`,
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    cwd,
  }).output();
  const result = {
    code,
    stdout: new TextDecoder().decode(stdout),
    stderr: new TextDecoder().decode(stderr),
  };
  assertEquals(result.code, 0, `${name} failed:\n${result.stderr}`);
  return result;
}

/** A few thousand characters of play-like text. */
function corpus(lines: number): string {
  const names = ["ROMEO", "JULIET", "NURSE"];
  const words = ["love", "night", "the", "moon", "sweet", "good", "my", "lord", "fair", "is"];
  let s = 11;
  const next = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  const out = [];
  for (let i = 0; i < lines; i++) {
    out.push(`${names[Math.floor(next() * 3)]}:`);
    out.push(
      Array.from({ length: 6 }, () => words[Math.floor(next() * words.length)]).join(" ") + ".\n",
    );
  }
  return out.join("\n");
}

Deno.test("examples/stream.ts streams from the shipped weights", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { stdout } = await runExample("stream.ts", ["JULIET:", "80"], dir);
    assert(stdout.startsWith("JULIET:"), stdout);
    assertEquals([...stdout].length, "JULIET:".length + 80 + 1); // prompt, 80 characters, newline
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("examples/next_char.ts prints the ten most likely next characters", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { stdout } = await runExample("next_char.ts", ["To be, or not to b"], dir);
    const lines = stdout.trimEnd().split("\n");
    assertEquals(lines[0], 'after "To be, or not to b":');
    assertEquals(lines.length, 11);
    const percents = lines.slice(1).map((line) => Number(line.match(/([\d.]+)%/)![1]));
    for (let i = 1; i < percents.length; i++) assert(percents[i] <= percents[i - 1], stdout);
    assert(percents.reduce((a, b) => a + b) <= 100.5, stdout);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("examples/stream.ts and next_char.ts take a weights path relative to the working folder", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.copyFile(`${ROOT}weights/shakespeare.safetensors`, `${dir}/mine.safetensors`);
    const streamed = await runExample("stream.ts", ["JULIET:", "20", "mine.safetensors"], dir, dir);
    assert(streamed.stdout.startsWith("JULIET:"), streamed.stdout);
    const next = await runExample("next_char.ts", ["To be", "mine.safetensors"], dir, dir);
    assertEquals(next.stdout.split("\n")[0], 'after "To be":');
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("examples/train_own_text.ts trains on a text file and saves the model", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/mine.txt`, corpus(60));
    const out = `${dir}/mine.safetensors`;
    const { stdout } = await runExample("train_own_text.ts", [`${dir}/mine.txt`, out, "20"], dir);
    assertMatch(stdout, /distinct characters/);
    assertMatch(stdout, /held-out loss \d+\.\d{4}/);
    assertMatch(stdout, /saved /);
    const model = await loadWeights(out);
    assertEquals(model.config.blockSize, 64);
    assertEquals(model.facts.steps, "20");
    assert(Number(model.facts.val_loss) > 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("examples/finetune.ts fine-tunes the shipped weights on a new text", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // "é" is not in the shipped vocabulary: the example adds it
    await Deno.writeTextFile(`${dir}/new.txt`, "Café society, said the cook. ".repeat(12));
    const out = `${dir}/tuned.safetensors`;
    const { stdout } = await runExample("finetune.ts", [`${dir}/new.txt`, out, "2"], dir);
    assertMatch(stdout, /added 1 new characters: é/);
    assertMatch(stdout, /loss on the new text: \d+\.\d{4} -> \d+\.\d{4}/);
    const tuned = await loadWeights(out);
    const shipped = await loadWeights(SHIPPED);
    assertEquals(tuned.config, { ...shipped.config, vocabSize: shipped.config.vocabSize + 1 });
    assertEquals(tuned.tokenizer.vocab, [...shipped.tokenizer.vocab, "é"]);
    assertEquals(tuned.facts.steps, "2");
    assertEquals(tuned.facts.base, "shakespeare");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("examples/finetune.ts fine-tunes a base model given by a relative path", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/new.txt`, "the cook said so. ".repeat(12));
    await Deno.copyFile(SHIPPED, `${dir}/base.safetensors`);
    const args = ["new.txt", "tuned.safetensors", "1", "base.safetensors"];
    const { stdout } = await runExample("finetune.ts", args, dir, dir);
    assertMatch(stdout, /saved tuned\.safetensors/);
    const tuned = await loadWeights(`${dir}/tuned.safetensors`);
    assertEquals(tuned.facts.steps, "1");
    assertEquals(tuned.facts.base, "base.safetensors");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
