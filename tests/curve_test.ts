// `deno task curve LOG [OUT.svg]` (scripts/curve.ts): a log captured from a terminal (progress
// lines joined by \r, with the bar's ESC[K escapes) reads like a plain one, and an output path the
// process may not write gives one `error:` line naming the folder and exit code 2, not a stack
// trace. The script runs in a temporary folder with the task's permissions there.

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { curveSvg, logLines, parseCurve } from "../scripts/curve.ts";

const SCRIPT = new URL("../scripts/curve.ts", import.meta.url).pathname;

/** A training log as a terminal captures it: the live bar rewrites its line with \r. */
function terminalLog(): string {
  const bar = (step: number, loss: number) =>
    `\r[${"#".repeat(step / 10)}${" ".repeat(20 - step / 10)}] step ${step}/200 loss ${
      loss.toFixed(4)
    } 12,000 tok/s 40 ms/step eta 3s\x1b[K`;
  return [
    "training 0.11M parameters on 5000 characters\n",
    bar(10, 4.1),
    bar(50, 3.2),
    bar(100, 2.7),
    "\r\x1b[Kstep 100: validation loss 2.6543\n",
    bar(110, 2.6),
    bar(150, 2.4),
    bar(200, 2.3),
    "\r\x1b[Kstep 200: validation loss 2.4012\n",
    "step 200: validation loss ~2.5000 (estimate on 8 windows)\r\n",
    "final validation loss 2.3987 (3.4606 bits per character, 50 windows)\r\n",
    "wrote weights/x.safetensors\n",
  ].join("");
}

const EXPECTED = [
  { step: 100, loss: 2.6543 },
  { step: 200, loss: 2.4012 },
  { step: 200, loss: 2.3987 },
];

const TABLE = [
  "| step | validation loss |",
  "| ---: | ---: |",
  "| 100 | 2.6543 |",
  "| 200 | 2.4012 |",
  "| 200 | 2.3987 |",
].join("\n") + "\n";

async function curve(cwd: string, write: string[], args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--allow-read",
      ...(write.length > 0 ? [`--allow-write=${write.join(",")}`] : []),
      SCRIPT,
      ...args,
    ],
    cwd,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

Deno.test("curve: a log captured from a terminal (\\r-joined progress, escapes) parses", () => {
  const lines = logLines(terminalLog());
  assert(lines.includes("step 100: validation loss 2.6543"), JSON.stringify(lines));
  assert(lines.every((l) => !l.includes("\r") && !l.includes("\x1b")));
  assertEquals(parseCurve(terminalLog()), EXPECTED);
  // the same log written without a terminal (one line per print) reads the same
  const plain = terminalLog().replaceAll("\x1b[K", "").replace(/\r\n?/g, "\n");
  assertEquals(parseCurve(plain), EXPECTED);
  assert(curveSvg(EXPECTED).includes("<polyline"));
});

Deno.test("curve: the script prints the table of a terminal log and writes out/ on demand", async () => {
  const dir = await Deno.makeTempDir({ prefix: "curve_test_" });
  try {
    await Deno.writeTextFile(`${dir}/train.log`, terminalLog());
    // the task's permissions, as deno.json's "curve" task should grant them (docs and out)
    const r = await curve(dir, ["docs", "out"], ["train.log", "out/curve.svg"]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(r.stdout, TABLE);
    assertEquals(r.stderr, "wrote out/curve.svg\n");
    const svg = await Deno.readTextFile(`${dir}/out/curve.svg`);
    assert(svg.startsWith("<svg") && svg.includes("step 200: 2.3987"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("curve: an output without write permission is one error line and exit code 2", async () => {
  const dir = await Deno.makeTempDir({ prefix: "curve_test_" });
  try {
    await Deno.writeTextFile(`${dir}/train.log`, terminalLog());
    await Deno.mkdir(`${dir}/elsewhere`);
    for (
      const [out, folder] of [
        ["elsewhere/out.svg", "elsewhere"],
        ["out.svg", "."],
        ["new/deeper/out.svg", "new/deeper"],
      ]
    ) {
      const r = await curve(dir, ["docs", "out"], ["train.log", out]);
      assertEquals(r.code, 2, `${out}: ${r.stderr}`);
      const lines = r.stderr.trimEnd().split("\n");
      assertEquals(lines.length, 1, `${out}: ${r.stderr}`);
      assert(lines[0].startsWith("error: "), r.stderr);
      assert(lines[0].includes(`no write permission for ${folder};`), r.stderr);
      assert(!/\bat \S+:\d+:\d+/.test(r.stderr), `a stack trace: ${r.stderr}`);
    }
    // a missing log is one line too
    const missing = await curve(dir, [], ["nope.log"]);
    assertEquals([missing.code, missing.stderr], [2, "error: no log at nope.log\n"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
