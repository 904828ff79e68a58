// The page server (scripts/serve.ts) on hostile requests and bad command lines: every bad request
// gets a 4xx (or, for the unexpected, a 500 with one line) with a short plain-text body and no
// stack trace; only loopback Host names are answered (no DNS rebinding); flags and missing
// permissions give one-line `error: ...` messages and exit 2. The folder served in these tests is
// a temporary one holding a symlink loop, a link out of it and a few files.

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { handle, hostAllowed, startServer } from "../scripts/serve.ts";

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname);
const SERVE = `${ROOT}scripts/serve.ts`;
/** A stack line as V8 and Deno print them. */
const STACK = "    at ";

/** A temporary root: index.html, a.txt, web/index.html, a symlink loop, links out and to self. */
async function makeRoot(): Promise<{ root: string; outside: string }> {
  const root = await Deno.makeTempDir({ prefix: "serve_test_root_" });
  const outside = await Deno.makeTempDir({ prefix: "serve_test_outside_" });
  await Deno.writeTextFile(`${outside}/secret.txt`, "secret\n");
  await Deno.writeTextFile(`${root}/a.txt`, "hello\n");
  await Deno.mkdir(`${root}/web`);
  await Deno.writeTextFile(`${root}/web/index.html`, "<title>page</title>\n");
  await Deno.writeTextFile(`${root}/.hidden`, "hidden\n");
  await Deno.mkdir(`${root}/empty`); // a folder without index.html
  // loops: two links naming each other, and one naming itself
  await Deno.symlink(`${root}/loop_b`, `${root}/loop_a`);
  await Deno.symlink(`${root}/loop_a`, `${root}/loop_b`);
  await Deno.symlink(`${root}/self`, `${root}/self`);
  await Deno.symlink(outside, `${root}/out`);
  await Deno.symlink(`${outside}/secret.txt`, `${root}/secret.txt`);
  await Deno.symlink(`${root}/nowhere`, `${root}/dangling`);
  return { root, outside };
}

async function cleanup(dirs: { root: string; outside: string }): Promise<void> {
  await Deno.remove(dirs.root, { recursive: true });
  await Deno.remove(dirs.outside, { recursive: true });
}

function noStack(text: string, what: string): void {
  assert(!text.includes(STACK), `${what}: a stack trace in ${JSON.stringify(text.slice(0, 400))}`);
  assert(!text.includes("Error:") || text.startsWith("error:"), `${what}: ${text.slice(0, 400)}`);
}

const LONG_SEGMENT = "x".repeat(300);
/** Under the 414 limit, but the file name it builds is over the OS's PATH_MAX once encoded. */
const LONG_WHOLE = "/" + Array.from({ length: 20 }, () => "y".repeat(200)).join("/");

/** [path, expected status] for {@linkcode handle} (URL paths: `new URL` normalizes `..`). */
const PATH_CASES: [string, number][] = [
  ["/a.txt", 200],
  ["/web/", 200],
  ["/web/index.html", 200],
  // a long segment (ENAMETOOLONG on the filesystem): 400, whatever it holds
  [`/${LONG_SEGMENT}`, 400],
  [`/web/${LONG_SEGMENT}`, 400],
  [`/${LONG_SEGMENT}/a.txt`, 400],
  [`/${"%C3%A9".repeat(130)}`, 400], // 130 characters, 260 bytes
  [`/${"%78".repeat(256)}`, 400], // encoded, 256 bytes decoded
  [`/${"x".repeat(255)}`, 404], // the longest name allowed, missing
  // a long whole path: 414 over the limit, else nothing found
  [`/${"z/".repeat(600)}`, 414],
  ["/" + "a".repeat(2000), 414],
  ["/" + Array.from({ length: 4 }, () => "y".repeat(200)).join("/"), 404], // 804 bytes
  // symlink loops, links out, dangling links
  ["/loop_a", 404],
  ["/loop_b", 404],
  ["/loop_a/x", 404],
  ["/self", 404],
  ["/self/", 404],
  ["/out/secret.txt", 404],
  ["/secret.txt", 404],
  ["/dangling", 404],
  // traversal, plain and encoded
  ["/../etc/passwd", 404],
  ["/web/../../etc/passwd", 404],
  ["/%2e%2e/etc/passwd", 404],
  ["/%2E%2E/%2e%2e/etc/passwd", 404],
  ["/web/..%2f..%2fetc/passwd", 404],
  ["/web/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 404],
  ["/a.txt/..%2F..%2F..%2Fetc%2Fpasswd", 404],
  ["/..%5c..%5cetc%5cpasswd", 404],
  // NUL and other odd bytes
  ["/a.txt%00", 404],
  ["/web/%00", 404],
  ["/%00/a.txt", 404],
  ["/a.txt%00.html", 404],
  // malformed percent-encoding
  ["/%zz", 400],
  ["/a%", 400],
  ["/%C3", 400],
  ["/%ff%fe", 400],
  // dotfiles, folders without an index, files as folders
  ["/.hidden", 404],
  ["/.git/config", 404],
  ["/empty/", 404],
  ["/a.txt/", 404],
  ["/a.txt/b", 404],
  ["/nope.txt", 404],
];

Deno.test("serve: bad paths get 4xx with a short body and no trace", async () => {
  const dirs = await makeRoot();
  try {
    for (const [path, status] of [...PATH_CASES, [LONG_WHOLE, 414] as [string, number]]) {
      for (const method of ["GET", "HEAD"]) {
        const r = await handle(
          new Request(`http://127.0.0.1:8000${path}`, { method }),
          dirs.root,
        );
        const text = await r.text();
        assertEquals(r.status, status, `${method} ${path.slice(0, 80)}: ${text}`);
        noStack(text, path);
        assert(text.length < 200, `${path.slice(0, 80)}: body of ${text.length} characters`);
        if (status >= 400 && method === "GET") {
          assertEquals(r.headers.get("content-type"), "text/plain; charset=utf-8");
        }
        assert(!text.includes("secret"), path);
      }
    }
  } finally {
    await cleanup(dirs);
  }
});

Deno.test("serve: a file name over the OS's limit under a deep root is 404, no trace", async () => {
  // the root itself is ~3,800 bytes deep, so a short request path passes PATH_MAX (ENAMETOOLONG)
  const top = await Deno.makeTempDir({ prefix: "serve_test_deep_" });
  try {
    let root = top;
    for (let i = 0; i < 15; i++) {
      root += "/" + "d".repeat(250);
      await Deno.mkdir(root);
    }
    await Deno.writeTextFile(`${root}/a.txt`, "deep\n");
    const paths = ["/" + "e".repeat(250) + "/" + "f".repeat(250), "/" + "g/".repeat(200) + "h"];
    for (const path of paths) {
      const r = await handle(new Request(`http://127.0.0.1:8000${path}`), root);
      const text = await r.text();
      assertEquals(r.status, 404, `${path.slice(0, 60)}: ${text}`);
      noStack(text, path);
    }
    const ok = await handle(new Request("http://127.0.0.1:8000/a.txt"), root);
    assertEquals([ok.status, await ok.text()], [200, "deep\n"]);
  } finally {
    await Deno.remove(top, { recursive: true });
  }
});

Deno.test("serve: methods other than GET and HEAD get 405", async () => {
  const dirs = await makeRoot();
  try {
    for (const method of ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"]) {
      for (const path of ["/a.txt", "/loop_a", `/${LONG_SEGMENT}`]) {
        const r = await handle(new Request(`http://127.0.0.1:8000${path}`, { method }), dirs.root);
        const text = await r.text();
        assertEquals([r.status, r.headers.get("allow")], [405, "GET, HEAD"], `${method} ${path}`);
        noStack(text, method);
      }
    }
  } finally {
    await cleanup(dirs);
  }
});

/** [Host header, allowed when the server's port is 8000]. */
const HOST_CASES: [string, boolean][] = [
  ["localhost", true],
  ["localhost:8000", true],
  ["LOCALHOST:8000", true],
  ["127.0.0.1", true],
  ["127.0.0.1:8000", true],
  ["[::1]", true],
  ["[::1]:8000", true],
  ["localhost:8001", false],
  ["127.0.0.1:80", false],
  ["[::1]:1", false],
  ["evil.example", false],
  ["evil.example:8000", false],
  ["localhost.evil.example", false],
  ["localhost.evil.example:8000", false],
  ["127.0.0.1.nip.io", false],
  ["127.0.0.1.nip.io:8000", false],
  ["evil.localhost", false],
  ["localhost.", false],
  ["localhost.:8000", false],
  ["127.0.0.1@evil.example", false],
  ["evil.example@localhost", false],
  ["localhost:8000@evil.example", false],
  ["localhost/", false],
  ["localhost:", false],
  ["localhost:8000:8000", false],
  ["127.1", false],
  ["0.0.0.0:8000", false],
  ["[::ffff:127.0.0.1]:8000", false],
  ["", false],
  ["local host", false],
  ["localhost\t:8000", false],
];

Deno.test("serve: only loopback Host names are answered", async () => {
  const dirs = await makeRoot();
  try {
    for (const [host, allowed] of HOST_CASES) {
      assertEquals(hostAllowed(host, 8000), allowed, host);
      const r = await handle(
        new Request("http://127.0.0.1:8000/a.txt", { headers: { host } }),
        dirs.root,
        { port: 8000 },
      );
      const text = await r.text();
      assertEquals(r.status, allowed ? 200 : 403, `Host ${JSON.stringify(host)}`);
      assertEquals(text.includes("hello"), allowed, host);
      noStack(text, host);
    }
    // without a port option (direct calls), any port with a loopback name; never a foreign name
    assert(hostAllowed("localhost:1234"));
    assert(!hostAllowed("evil.example:1234"));
    // without a Host header, the URL's host is checked
    const foreign = await handle(new Request("http://evil.example/a.txt"), dirs.root);
    assertEquals(foreign.status, 403);
    await foreign.body?.cancel();
  } finally {
    await cleanup(dirs);
  }
});

/** Sends one raw HTTP/1.1 request, so Host and the request target go as written. */
async function raw(port: number, target: string, host: string | null): Promise<[number, string]> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const lines = [`GET ${target} HTTP/1.1`, ...(host === null ? [] : [`Host: ${host}`])];
    await conn.write(
      new TextEncoder().encode(lines.join("\r\n") + "\r\nConnection: close\r\n\r\n"),
    );
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(65536);
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
    const text = new TextDecoder().decode(
      new Uint8Array(chunks.flatMap((c) => [...c])),
    );
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
    return [status, text];
  } finally {
    try {
      conn.close();
    } catch {
      // already closed by the server
    }
  }
}

Deno.test("serve: the real server, raw requests", async () => {
  const dirs = await makeRoot();
  const server = startServer({ port: 0, root: dirs.root });
  const port = server.addr.port;
  try {
    const cases: [string, string | null, number][] = [
      ["/a.txt", `127.0.0.1:${port}`, 200],
      ["/a.txt", `localhost:${port}`, 200],
      ["/a.txt", "localhost", 200],
      ["/a.txt", `[::1]:${port}`, 200],
      ["/a.txt", `localhost:${port === 65535 ? 1 : port + 1}`, 403],
      ["/a.txt", "evil.example", 403],
      ["/a.txt", `evil.example:${port}`, 403],
      ["/a.txt", `localhost.evil.example:${port}`, 403],
      ["/a.txt", `127.0.0.1.nip.io:${port}`, 403],
      ["/../../../../etc/passwd", `localhost:${port}`, 404],
      ["/%2e%2e/%2e%2e/etc/passwd", `localhost:${port}`, 404],
      ["/web/..%2f..%2f..%2fetc/passwd", `localhost:${port}`, 404],
      ["/out/secret.txt", `localhost:${port}`, 404],
      ["/a.txt%00", `localhost:${port}`, 404],
      [`/${LONG_SEGMENT}`, `localhost:${port}`, 400],
      [LONG_WHOLE, `localhost:${port}`, 414],
      ["/loop_a", `localhost:${port}`, 404],
      ["/self/", `localhost:${port}`, 404],
      ["/%zz", `localhost:${port}`, 400],
    ];
    for (const [target, host, status] of cases) {
      const [got, text] = await raw(port, target, host);
      assertEquals(got, status, `${target.slice(0, 60)} Host ${host}: ${text.slice(0, 300)}`);
      noStack(text, target);
      assert(!text.includes("secret"), target);
    }
  } finally {
    await server.shutdown();
    await cleanup(dirs);
  }
});

Deno.test("serve: an unexpected error is a 500 with one line, logged once", async () => {
  const dirs = await makeRoot();
  const logged: string[] = [];
  const error = console.error;
  console.error = (...args: unknown[]) => logged.push(args.join(" "));
  try {
    // a root with a NUL in its name: the filesystem call throws a TypeError, not a Deno.errors one
    const r = await handle(
      new Request("http://127.0.0.1:8000/a.txt"),
      `${dirs.root}/a.txt\u0000x`,
    );
    const text = await r.text();
    assertEquals([r.status, text], [500, "internal error\n"]);
    assertEquals(logged.length, 1, logged.join("\n"));
    assert(logged[0].startsWith("serve: internal error on GET "), logged[0]);
    assert(!logged[0].includes("\n") && !logged[0].includes(STACK), logged[0]);
  } finally {
    console.error = error;
    await cleanup(dirs);
  }
});

async function serveCommand(
  permissions: string[],
  args: string[],
  cwd = ROOT,
): Promise<{ code: number; stderr: string; stdout: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", ...permissions, SERVE, ...args],
    cwd,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  // a server that starts when it should have refused would never end: stop it after 30 s
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const out = await child.output().finally(() => clearTimeout(timer));
  return {
    code: out.code,
    stderr: new TextDecoder().decode(out.stderr),
    stdout: new TextDecoder().decode(out.stdout),
  };
}

/** A folder that holds no part of the repository (the repository may itself live under /tmp). */
const OTHER_FOLDER = await Deno.makeTempDir({ prefix: "baregpt_serve_cwd_" });

Deno.test("serve: command-line errors are one line with exit 2", async () => {
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const busyPort = (busy.addr as Deno.NetAddr).port;
  const both = ["--allow-net=127.0.0.1", "--allow-read=."];
  const cases: [string, string[], string[], RegExp, string?][] = [
    ["unknown flag", both, ["--bogus"], /^error: Unknown option '--bogus'/],
    ["unknown short flag", both, ["-x"], /^error: Unknown option '-x'/],
    ["positional", both, ["extra"], /^error: .*extra/],
    ["bad port (word)", both, ["--port", "abc"], /^error: --port "abc" is not a port/],
    ["bad port (big)", both, ["--port", "70000"], /^error: --port "70000" is not a port/],
    ["bad port (negative)", both, ["--port=-1"], /^error: --port "-1" is not a port/],
    ["bad port (fraction)", both, ["--port", "80.5"], /^error: --port "80.5" is not a port/],
    ["bad port (hex)", both, ["--port", "0x50"], /^error: --port "0x50" is not a port/],
    ["bad port (empty)", both, ["--port="], /^error: --port "" is not a port/],
    ["no port value", both, ["--port"], /^error: .*--port/],
    ["busy port", both, ["--port", String(busyPort)], /^error: port \d+ is in use/],
    ["no --allow-net", ["--allow-read=."], ["--port", "0"], /^error: no permission to listen/],
    [
      "--allow-net for another host",
      ["--allow-net=example.com", "--allow-read=."],
      ["--port", "0"],
      /^error: no permission to listen/,
    ],
    [
      "--allow-net for another port",
      ["--allow-net=127.0.0.1:1", "--allow-read=."],
      ["--port", String(busyPort)],
      /^error: no permission to listen/,
    ],
    [
      "no --allow-read",
      ["--allow-net=127.0.0.1"],
      ["--port", "0"],
      /^error: no permission to read/,
    ],
    [
      "--allow-read of another folder",
      ["--allow-net=127.0.0.1", "--allow-read=."],
      ["--port", "0"],
      /^error: no permission to read/,
      OTHER_FOLDER,
    ],
    ["no permissions", [], [], /^error: no permission to listen/],
  ];
  try {
    for (const [what, permissions, args, message, cwd] of cases) {
      const out = await serveCommand(permissions, args, cwd);
      assertEquals(out.code, 2, `${what}: exit ${out.code}: ${out.stderr}`);
      const lines = out.stderr.trimEnd().split("\n");
      assertEquals(lines.length, 1, `${what}: ${out.stderr}`);
      assert(message.test(lines[0]), `${what}: ${lines[0]}`);
      noStack(out.stderr, what);
      assertEquals(out.stdout, "", what);
    }
  } finally {
    busy.close();
  }
});

Deno.test("serve: --help exits 0 with the usage", async () => {
  const out = await serveCommand([], ["--help"]);
  assertEquals(out.code, 0, out.stderr);
  assert(out.stdout.startsWith("usage: scripts/serve.ts"), out.stdout);
});
