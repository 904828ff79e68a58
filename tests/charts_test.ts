// The charts of lib/charts.ts (bar chart, line chart, texts side by side) and Picture, the object
// that shows itself in Jupyter: one element per datum, escaped text, round ticks, the empty case,
// and a display hook that is plain data elsewhere. The `curve` script draws with the same chart.

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { barChartSvg, lineChartSvg, Picture, picture, textColumnsHtml } from "../mod.ts";
import * as draw from "../lib/draw.ts";
import { curveSvg } from "../scripts/curve.ts";

const count = (s: string, re: RegExp) => s.match(re)?.length ?? 0;

/** The numbers in an attribute of every element that has it. */
function attributes(svg: string, element: string, name: string): string[] {
  const re = new RegExp(`<${element}\\b[^>]*?\\s${name}="([^"]*)"`, "g");
  return [...svg.matchAll(re)].map((m) => m[1]);
}

Deno.test("bar chart: one rect per bar, lengths in proportion, labels and values escaped", () => {
  const svg = barChartSvg([
    { label: "e", value: 0.5 },
    { label: "<&>", value: 0.25 },
    { label: "·", value: 0 },
  ], { title: 'after "th" & <b>' });
  assert(svg.startsWith("<svg ") && svg.trimEnd().endsWith("</svg>"));
  assertEquals(count(svg, /<rect /g), 3);
  const widths = attributes(svg, "rect", "width").map(Number);
  assertEquals(widths[1] * 2, widths[0]);
  assertEquals(widths[2], 0);
  assert(svg.includes("&lt;&amp;&gt;") && !svg.includes("<&>"), "a label is escaped");
  assert(svg.includes("after &quot;th&quot; &amp; &lt;b&gt;"), "the title is escaped");
  assert(svg.includes(">50.0%<") && svg.includes(">25.0%<"), "values as percentages");
  // a custom format and scale: max 1 makes the 0.5 bar half the full length
  const scaled = barChartSvg([{ label: "a", value: 0.5 }], { max: 1, format: (v) => `p=${v}` });
  assert(scaled.includes(">p=0.5<"));
  const full = barChartSvg([{ label: "a", value: 1 }], { max: 1 });
  const half = Number(attributes(scaled, "rect", "width")[0]);
  assertEquals(half * 2, Number(attributes(full, "rect", "width")[0]));
  // no bars: a valid, empty chart
  const empty = barChartSvg([]);
  assert(empty.startsWith("<svg ") && count(empty, /<rect /g) === 0);
});

Deno.test("line chart: a polyline per series, markers with tooltips, round ticks, a legend", () => {
  const svg = lineChartSvg([
    { name: "training", points: [{ x: 1, y: 4.17 }, { x: 50, y: 2.9 }, { x: 100, y: 2.46 }] },
    { name: "validation & more", points: [{ x: 0, y: 4.2 }, { x: 100, y: 2.5 }], markers: true },
  ], { title: "loss", xLabel: "step" });
  assertEquals(count(svg, /<polyline /g), 2);
  assertEquals(count(svg, /<circle /g), 2);
  assert(svg.includes("<title>step 100: 2.5</title>"), "a marker's tooltip");
  assert(svg.includes("validation &amp; more"), "the legend, escaped");
  // the y ticks are round and cover the values; the x axis starts at 0 and covers the last x
  const yTicks = [...svg.matchAll(/text-anchor="end">([\d.]+)</g)].map((m) => Number(m[1]));
  assert(yTicks[0] <= 2.46 && yTicks.at(-1)! >= 4.2, `y ticks ${yTicks}`);
  for (const t of yTicks) assertEquals(Math.round(t * 10) / 10, t);
  const xTicks = [...svg.matchAll(/text-anchor="middle">(\d+)</g)].map((m) => Number(m[1]));
  assertEquals(xTicks[0], 0);
  assert(xTicks.at(-1)! >= 100, `x ticks ${xTicks}`);
  // every point lies inside the plot area
  for (const pair of attributes(svg, "polyline", "points")[0].split(" ")) {
    const [x, y] = pair.split(",").map(Number);
    assert(x >= 56 && x <= 544 && y >= 0 && y <= 276, pair);
  }
});

Deno.test("line chart: no points yet, one point, non-finite values: still a chart", () => {
  const empty = lineChartSvg({ points: [] }, { title: "loss" });
  assert(empty.startsWith("<svg ") && !empty.includes("NaN") && !empty.includes("Infinity"));
  assertEquals(count(empty, /<polyline /g), 0);
  const one = lineChartSvg({ points: [{ x: 3, y: 2 }] });
  assertEquals(count(one, /<circle /g), 1, "a single point is drawn as a dot");
  const odd = lineChartSvg({ points: [{ x: 0, y: 1 }, { x: 1, y: NaN }, { x: 2, y: 0.5 }] });
  assert(!odd.includes("NaN"));
  assertEquals(attributes(odd, "polyline", "points")[0].split(" ").length, 2);
  // a flat series gets a y range all the same
  assert(!lineChartSvg({ points: [{ x: 0, y: 2 }, { x: 9, y: 2 }] }).includes("NaN"));
});

Deno.test("the curve script's chart is the library's line chart", () => {
  const points = [{ step: 100, loss: 2.6543 }, { step: 200, loss: 2.3987 }];
  const line = points.map((p) => ({ x: p.step, y: p.loss }));
  assertEquals(
    curveSvg(points),
    lineChartSvg({ points: line, markers: true }, { title: "validation loss" }),
  );
  assert(curveSvg(points).includes("<title>step 200: 2.3987</title>"));
});

Deno.test("texts side by side: one column each, escaped, line breaks kept", () => {
  const html = textColumnsHtml([
    { title: "temperature 0.5", text: "ROMEO:\nI <love> & thee" },
    { title: "top-k 5", text: "JULIET:\nO" },
  ]);
  assertEquals(count(html, /<th /g), 2);
  assertEquals(count(html, /<pre /g), 2);
  assert(html.includes("ROMEO:\nI &lt;love&gt; &amp; thee"));
  assert(!html.includes("<love>"));
});

Deno.test("Picture shows itself in Jupyter and is plain text elsewhere", () => {
  const svg = barChartSvg([{ label: "a", value: 1 }]);
  const p = picture(svg);
  assert(p instanceof Picture);
  assertEquals(p.type, "image/svg+xml");
  assertEquals(String(p), svg);
  assertEquals(`${p}`, svg);
  const display = (p as unknown as Record<symbol, () => unknown>)[Symbol.for("Jupyter.display")];
  assertEquals(typeof display, "function");
  assertEquals(display.call(p), { "image/svg+xml": svg });
  // HTML by its text, or by the type given
  const table = picture(textColumnsHtml([{ title: "a", text: "b" }]));
  assertEquals(table.type, "text/html");
  assertEquals(new Picture("  <svg>", "text/html").type, "text/html");
  assertEquals(new Picture("\n<svg xmlns='http://www.w3.org/2000/svg'/>").type, "image/svg+xml");
  // nothing else about it is special: its own enumerable fields are the document and its type
  assertEquals(Object.keys(p).sort(), ["text", "type"]);
});

Deno.test("the charts are the ./draw export's too", () => {
  assertEquals(draw.barChartSvg, barChartSvg);
  assertEquals(draw.lineChartSvg, lineChartSvg);
  assertEquals(draw.picture, picture);
});
