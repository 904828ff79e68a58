// Inspection: step-by-step generation against decodeSteps, candidates, attention windows, the
// SVG heatmaps (one rect per cell of the causal triangle, escaped labels) and the text views.
// The `inspect` command itself (cli/inspect.ts) is covered by the CLI tests.

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import {
  attentionSvg,
  displayChar,
  escapeXml,
  formatCandidateTable,
  probabilityBar,
  renderAttentionSvg,
  renderAttentionTerminal,
} from "../lib/draw.ts";
import { InputError } from "../lib/errors.ts";
import { attentionWindow, inspectSteps, inspectText, topCandidates } from "../lib/inspect.ts";
import { GPT, KVCache, type ModelConfig } from "../lib/model.ts";
import { Rng } from "../lib/rng.ts";
import { decodeSteps, type SamplingOptions } from "../lib/sample.ts";
import { Tokenizer } from "../lib/tokenizer.ts";
import { loadModel, saveModel } from "../lib/weights.ts";
import { forEachTier } from "./tiers.ts";

/** A vocabulary with every character XML or a terminal could trip on. */
const VOCAB = ["\n", " ", "!", '"', "&", "'", "<", ">", "A", "B", "a", "b", "c", "é", "ß", "→"];
const tokenizer = new Tokenizer(VOCAB);
const NEWLINE = 0;
const config: ModelConfig = {
  vocabSize: VOCAB.length,
  blockSize: 16,
  dModel: 16,
  nLayers: 2,
  nHeads: 2,
};

/** A random model scaled up so that its distributions are peaked (greedy has clear winners). */
function model(seed = 3): GPT {
  const m = new GPT(config, { grads: false, tokenizer }).init(seed);
  for (let i = 0; i < m.flat.length; i++) m.flat[i] *= 20;
  return m;
}

const PROMPT = tokenizer.encode('A <b> & "c"');

/** The ids generation draws: decodeSteps with a seeded Rng (seed 0 by default, as inspect). */
function generateIds(
  m: GPT,
  prompt: ArrayLike<number>,
  o: SamplingOptions & { tokens: number; seed?: number },
): number[] {
  return [...decodeSteps(m, prompt, { ...o, rng: new Rng(o.seed ?? 0) })].map((s) => s.id);
}

forEachTier(
  "greedy inspect chooses what decodeSteps at temperature 0 does, across slides",
  () => {
    const m = model();
    for (const tokens of [1, 5, 40]) { // 40 > blockSize: the window slides twice
      const expected = generateIds(m, PROMPT, { tokens, temperature: 0 });
      const result = inspectText(m, PROMPT, { tokens });
      assertEquals(result.generated, expected, `${tokens} tokens`);
      assertEquals(result.prompt, [...PROMPT]);
      // greedy: the chosen character is the top candidate
      for (const s of result.steps) assertEquals(s.candidates[0].id, s.id);
    }
  },
);

forEachTier("sampled inspect draws what decodeSteps draws for the same seed", () => {
  const m = model(4);
  for (const options of [{ temperature: 1.3 }, { temperature: 0.7, topK: 4 }, { topP: 0.8 }]) {
    const o = { tokens: 37, seed: 9, temperature: 1, ...options };
    const expected = generateIds(m, PROMPT, o);
    const got = [...inspectSteps(m, PROMPT, o)].map((s) => s.id);
    assertEquals(got, expected, JSON.stringify(options));
  }
});

Deno.test("an empty prompt starts from the newline, as decodeSteps does", () => {
  const m = model();
  const expected = generateIds(m, [], { tokens: 10, temperature: 0 });
  const r = inspectText(m, [], { tokens: 10 });
  assertEquals(r.generated, expected);
  assertEquals(r.prompt, [NEWLINE]);
});

Deno.test("candidates are sorted, at most top, sum to at most 1, and match the chosen step", () => {
  const m = model(5);
  for (const temperature of [0, 0.8]) {
    const steps = [...inspectSteps(m, PROMPT, { tokens: 30, top: 4, temperature })];
    for (const s of steps) {
      assert(s.candidates.length <= 4 && s.candidates.length > 0);
      let sum = 0;
      for (let i = 0; i < s.candidates.length; i++) {
        const c = s.candidates[i];
        sum += c.prob;
        assert(c.prob > 0 && c.prob <= 1);
        assertEquals(c.prob, s.probs[c.id]);
        if (i > 0) assert(s.candidates[i - 1].prob >= c.prob, "sorted");
      }
      assert(sum <= 1 + 1e-9, `sum ${sum}`);
      assertEquals(s.prob, s.probs[s.id]);
      const total = s.probs.reduce((a, b) => a + b, 0);
      assert(Math.abs(total - 1) < 1e-9);
      // no character outside the list is more likely than the last one listed
      const last = s.candidates.at(-1)!.prob;
      const listed = new Set(s.candidates.map((c) => c.id));
      for (let id = 0; id < s.probs.length; id++) {
        if (!listed.has(id)) assert(s.probs[id] <= last);
      }
    }
  }
  assertEquals(topCandidates([0.2, 0.5, 0, 0.2, 0.1], 3), [
    { id: 1, prob: 0.5 },
    { id: 0, prob: 0.2 },
    { id: 3, prob: 0.2 },
  ]);
  assertEquals(topCandidates([0, 0, 1], 5), [{ id: 2, prob: 1 }]);
});

forEachTier("a step's attention is the row of the query that predicted it", () => {
  const m = model(6);
  const steps = [...inspectSteps(m, PROMPT, { tokens: 3, layer: 0 })];
  const H = config.nHeads;
  // position of the first generated char is PROMPT.length; its query is PROMPT.length - 1
  const map = attentionWindow(m, PROMPT, { layer: 0 });
  const n = PROMPT.length;
  const w = steps[0].attention.length / H;
  assertEquals(w, n);
  for (let h = 0; h < H; h++) {
    for (let j = 0; j < n; j++) {
      const a = steps[0].attention[h * w + j], b = map.probs[(h * n + n - 1) * n + j];
      assert(Math.abs(a - b) < 1e-5, `head ${h} key ${j}: ${a} vs ${b}`);
    }
  }
});

forEachTier(
  "the attention window is the last blockSize characters; rows are causal and sum to 1",
  () => {
    const m = model(7);
    const T = config.blockSize;
    const text = Array.from({ length: 23 }, (_, i) => (i * 7) % VOCAB.length);
    const map = attentionWindow(m, text, { promptLength: 10 });
    assertEquals(map.start, 23 - T);
    assertEquals(map.tokens, text.slice(23 - T));
    assertEquals(map.promptLength, 10 - (23 - T));
    assertEquals(map.layer, config.nLayers - 1);
    assertEquals(map.logits.length, T * config.vocabSize);
    const n = T;
    for (let h = 0; h < config.nHeads; h++) {
      for (let t = 0; t < n; t++) {
        let sum = 0;
        for (let j = 0; j < n; j++) {
          const p = map.probs[(h * n + t) * n + j];
          if (j > t) assertEquals(p, 0);
          else assert(p >= 0);
          sum += p;
        }
        assert(Math.abs(sum - 1) < 1e-5, `head ${h} row ${t} sums to ${sum}`);
      }
    }
    // the batched pass's last row predicts what one-at-a-time feeding predicts
    const cache = new KVCache(m);
    let last: Float32Array | Float64Array = new Float32Array(0);
    for (const id of map.tokens) last = cache.feed([id]);
    const V = config.vocabSize;
    for (let v = 0; v < V; v++) {
      const a = map.logits[(n - 1) * V + v], b = last[v];
      assert(Math.abs(a - b) < 1e-4 * (1 + Math.abs(a)), `logit ${v}`);
    }
    try {
      attentionWindow(m, text, { layer: 2 });
      assert(false, "layer 2 of 2 was accepted");
    } catch (e) {
      assert(e instanceof InputError);
      assertEquals(e.message, "layer 2 is out of range; use an integer from 0 to 1");
    }
  },
);

/** The rects of each head's group in an SVG, as [x, y] pairs. */
function rectsByHead(svg: string): [number, number][][] {
  const heads = svg.split('<g class="head"').slice(1);
  return heads.map((h) =>
    [...h.matchAll(/<rect x="(\d+)" y="(\d+)" width="1" height="1" fill="#[0-9a-f]{6}"\/>/g)]
      .map((m) => [Number(m[1]), Number(m[2])] as [number, number])
  );
}

Deno.test("the SVG has exactly one rect per cell of the causal triangle, per head", () => {
  const m = model(8);
  for (const tokens of [0, 3, 30]) {
    const r = inspectText(m, PROMPT, { tokens });
    const n = Math.min(PROMPT.length + tokens, config.blockSize);
    const svg = renderAttentionSvg(r.attention, VOCAB);
    assertEquals(r.attention.tokens.length, n);
    const heads = rectsByHead(svg);
    assertEquals(heads.length, config.nHeads);
    assertEquals((svg.match(/<rect\b/g) ?? []).length, config.nHeads * n * (n + 1) / 2);
    for (const cells of heads) {
      assertEquals(cells.length, n * (n + 1) / 2);
      const seen = new Set<string>();
      for (const [x, y] of cells) {
        assert(x <= y && y < n, `cell (${x}, ${y}) is outside the causal triangle`);
        seen.add(`${x},${y}`);
      }
      assertEquals(seen.size, cells.length);
    }
  }
});

Deno.test("SVG labels are escaped and newline and space are shown visibly", () => {
  const m = model(9);
  const prompt = tokenizer.encode("<a&b> \"c'\n →é");
  const r = inspectText(m, prompt, { tokens: 0 });
  const svg = renderAttentionSvg(r.attention, VOCAB, { title: "<title & more>" });
  // outside of tags, no raw markup characters and only known entities
  const text = svg.replace(/<[^<>]*>/g, "");
  assert(!/[<>]/.test(text), "raw < or > in text content");
  assert(!/&(?!(amp|lt|gt|quot|#39);)/.test(text), "a bare & in text content");
  // attribute values never hold a raw quote or <
  for (const tag of svg.match(/<[^<>]*>/g)!) {
    assert(/^<\/?[a-zA-Z]+(\s+[a-zA-Z0-9:-]+="[^"<]*")*\s*\/?>$/.test(tag), `malformed tag ${tag}`);
  }
  const labels = [...svg.matchAll(/<text x="[\d.]+" y="[\d.]+" fill="#[0-9a-f]+">([^<]*)<\/text>/g)]
    .map((m) => m[1]);
  assertEquals(labels.length, 2 * prompt.length * config.nHeads); // top and left, per head
  for (const l of ["&lt;", "&amp;", "&gt;", "&quot;", "&#39;", "⏎", "·", "→", "é"]) {
    assert(labels.includes(l), `label ${l}`);
  }
  assert(svg.includes("&lt;title &amp; more&gt;"));
  assertEquals(escapeXml(`<"&'>`), "&lt;&quot;&amp;&#39;&gt;");
  assertEquals(displayChar("\n"), "⏎");
  assertEquals(displayChar(" "), "·");
  assertEquals(displayChar("\x01"), "␁");
  assertEquals(displayChar("a"), "a");
  // a colour scale with its legend
  assert(svg.includes("<linearGradient") && svg.includes("attention probability"));
});

Deno.test("attentionSvg draws weights given as [head][query][key] rows, as the API returns", () => {
  const m = model(13);
  const map = attentionWindow(m, PROMPT, { layer: 0, promptLength: 4 });
  const n = map.tokens.length;
  const heads = Array.from(
    { length: config.nHeads },
    (_, h) =>
      Array.from({ length: n }, (_, t) => map.probs.slice((h * n + t) * n, (h + 1) * n * n)),
  );
  const chars = map.tokens.map((id) => VOCAB[id]);
  const svg = attentionSvg(chars, heads, { layer: 0, nLayers: 2, promptLength: 4 });
  // the same drawing as from the map itself
  assertEquals(svg, renderAttentionSvg(map, VOCAB));
  try {
    attentionSvg(chars, [heads[0].slice(1)]);
    assert(false, "a head with a missing row was accepted");
  } catch (e) {
    assert(e instanceof InputError);
  }
});

Deno.test("the candidate table is aligned, with bars on request", () => {
  const m = model(10);
  const r = inspectText(m, PROMPT, { tokens: 12, top: 3 });
  for (const bars of [false, true]) {
    const table = formatCandidateTable(r.steps, VOCAB, { bars });
    const lines = table.trimEnd().split("\n");
    assertEquals(lines.length, 13);
    assert(lines[0].startsWith("pos  chose   prob   top 3 candidates"));
    // the chosen probability ends under "prob" on every row
    const probEnd = lines[0].indexOf("prob") + 4;
    for (const row of lines.slice(1)) {
      const chars = [...row];
      assert(/\d\.\d{3}$/.test(chars.slice(0, probEnd).join("")), row);
      assertEquals(chars[probEnd], " ", row);
    }
    assertEquals(table.includes("█") || table.includes("▏") || table.includes("▌"), bars);
  }
  assertEquals(probabilityBar(1), "████████");
  assertEquals(probabilityBar(0.5), "████");
  assertEquals(probabilityBar(0.0625), "▌");
  assertEquals(probabilityBar(0), "");
});

Deno.test("the terminal heatmap has a line per query and cell per key", () => {
  const m = model(11);
  const r = inspectText(m, PROMPT, { tokens: 2 });
  const n = PROMPT.length + 2;
  const plain = renderAttentionTerminal(r.attention, VOCAB);
  const lines = plain.trimEnd().split("\n");
  // 2 header lines, then per head: blank, title, key labels, n rows
  assertEquals(lines.length, 2 + config.nHeads * (3 + n));
  const firstRow = lines.indexOf("head 0") + 2;
  for (let t = 0; t < n; t++) assertEquals([...lines[firstRow + t]].length, 2 + t + 1);
  assert(!plain.includes("\x1b["));
  const colored = renderAttentionTerminal(r.attention, VOCAB, { color: true, heads: [1] });
  assert(colored.includes("\x1b[48;2;") && !colored.includes("head 0"));
});

Deno.test("a saved and loaded model inspects the same, with its own vocabulary", () => {
  const m = model(12);
  const loaded = loadModel(saveModel(m));
  assertEquals(loaded.tokenizer.decode(PROMPT), 'A <b> & "c"');
  const o = { tokens: 25, top: 3, layer: 0 };
  const a = inspectText(m, PROMPT, o), b = inspectText(loaded, PROMPT, o);
  assertEquals(b.generated, a.generated);
  assertEquals(b.attention.probs, a.attention.probs);
  const sampled = { tokens: 20, temperature: 0.9, seed: 5 };
  assertEquals(inspectText(loaded, PROMPT, sampled).generated, generateIds(m, PROMPT, sampled));
});
