/**
 * A small static server for the browser page: serves the repository on localhost with the right
 * content types (`.ts` as application/typescript, so Deno can import `mod.ts` from it; `.wasm`;
 * `.safetensors` as bytes) and the headers that make the page cross-origin isolated
 * (Cross-Origin-Opener-Policy and Cross-Origin-Embedder-Policy), which shared WebAssembly memory
 * needs in browsers. Only GET and HEAD, only files inside the repository, no dotfiles.
 *
 * `--no-isolation` (or `isolated: false` in {@linkcode startServer}) leaves those two headers out,
 * so the page is not cross-origin isolated: it has no SharedArrayBuffer, and the library gives the
 * kernels a plain WebAssembly memory instead (what a page on an ordinary host gets).
 *
 * ```sh
 * deno task serve            # http://localhost:8000/web/
 * deno run --allow-net=127.0.0.1 --allow-read=. scripts/serve.ts --port 8080
 * deno run --allow-net=127.0.0.1 --allow-read=. scripts/serve.ts --no-isolation
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";

/** Content types by file extension. */
export const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".ts": "application/typescript; charset=utf-8",
  ".wasm": "application/wasm",
  ".wat": "text/plain; charset=utf-8",
  ".safetensors": "application/octet-stream",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
};

/** The headers that make the page cross-origin isolated (sent unless isolation is off). */
const ISOLATION_HEADERS: Record<string, string> = {
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-embedder-policy": "require-corp",
};

/** Headers sent with every response. */
const COMMON_HEADERS: Record<string, string> = {
  "cross-origin-resource-policy": "same-origin",
  "x-content-type-options": "nosniff",
  "cache-control": "no-cache",
};

/** Options of {@linkcode handle}. */
export interface HandleOptions {
  /** Send the cross-origin isolation headers (COOP and COEP). Default true. */
  isolated?: boolean;
  /**
   * The server's port: a `Host` header naming a port must name this one. Unset (direct calls in
   * tests), any port is accepted; the host name is checked either way.
   */
  port?: number;
}

function baseHeaders(options: HandleOptions): Record<string, string> {
  return (options.isolated ?? true) ? { ...ISOLATION_HEADERS, ...COMMON_HEADERS } : COMMON_HEADERS;
}

/** The repository root: the folder above this script. */
export const REPO_ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname);

/** The longest request path (as sent, percent-encoded) answered; longer ones get 414. */
export const MAX_PATH_LENGTH = 1024;
/** The longest path segment, in UTF-8 bytes once decoded (a file name's limit); longer: 400. */
export const MAX_SEGMENT_BYTES = 255;

/**
 * The host names answered: only loopback names, so a page on another site whose name was rebound
 * to 127.0.0.1 (DNS rebinding) gets 403 instead of the files. Exactly these spellings, with an
 * optional port; case-insensitive.
 */
const HOST_PATTERN = /^(localhost|127\.0\.0\.1|\[::1\])(?::(\d{1,5}))?$/i;

/**
 * Whether a `Host` header (or, without one, the request URL's host) names this server: `localhost`,
 * `127.0.0.1` or `[::1]`, without a port or with `port` (any port when `port` is undefined).
 */
export function hostAllowed(host: string, port?: number): boolean {
  const m = HOST_PATTERN.exec(host);
  if (m === null) return false;
  return m[2] === undefined || port === undefined || Number(m[2]) === port;
}

function plainResponse(
  base: Record<string, string>,
  status: number,
  text: string,
  extra: Record<string, string> = {},
): Response {
  return new Response(text + "\n", {
    status,
    headers: { ...base, "content-type": "text/plain; charset=utf-8", ...extra },
  });
}

function extension(path: string): string {
  const name = path.slice(path.lastIndexOf("/") + 1);
  const dot = name.lastIndexOf(".");
  return dot <= 0 ? "" : name.slice(dot).toLowerCase();
}

/**
 * The file a URL path names under `root`, or null when it may not be served: any `..`, `.`, empty
 * or dot-prefixed segment (which also hides `.git`), a backslash or a NUL.
 */
export function resolvePath(root: string, urlPath: string): string | null {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (!decoded.startsWith("/") || decoded.includes("\\") || decoded.includes("\0")) return null;
  const segments = decoded.slice(1).split("/");
  if (segments.at(-1) === "") segments.pop(); // a trailing slash names a folder
  for (const s of segments) {
    if (s === "" || s.startsWith(".")) return null;
  }
  return (root.endsWith("/") ? root : root + "/") + segments.join("/");
}

/** Why a request path is malformed (400), or null: bad percent-encoding, an overlong segment. */
function badPath(urlPath: string): string | null {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return "bad request: malformed percent-encoding in the path";
  }
  const encoder = new TextEncoder();
  for (const s of decoded.split("/")) {
    if (encoder.encode(s).length > MAX_SEGMENT_BYTES) {
      return `bad request: a path segment is longer than ${MAX_SEGMENT_BYTES} bytes`;
    }
  }
  return null;
}

/** The error's class name and message on one line, for the log. */
function oneLine(e: unknown): string {
  const text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return text.replace(/\s+/g, " ").slice(0, 300);
}

/**
 * Filesystem errors as answers: a name that leads nowhere (missing, not a folder, a symlink
 * loop, too long) is 404, one that may not be read 403; anything else is null (an internal error).
 */
function fsErrorStatus(e: unknown): [number, string] | null {
  if (
    e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory ||
    e instanceof Deno.errors.FilesystemLoop || e instanceof Deno.errors.IsADirectory ||
    (e instanceof Error && (e as { code?: string }).code === "ENAMETOOLONG")
  ) {
    return [404, "not found"];
  }
  if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
    return [403, "forbidden"];
  }
  return null;
}

/**
 * Handles one request for files under `root` (exported for tests). It never throws and never
 * answers with a stack trace: bad requests get a 4xx with a one-line plain-text body (400 bad
 * path, 403 a foreign `Host` or an unreadable file, 404 missing, 405 not GET or HEAD, 414 path
 * too long), and an unexpected error a 500 "internal error" and one line on stderr.
 */
export async function handle(
  request: Request,
  root: string = REPO_ROOT,
  options: HandleOptions = {},
): Promise<Response> {
  const base = baseHeaders(options);
  try {
    return await answer(request, root, options, base);
  } catch (e) {
    const fs = fsErrorStatus(e);
    if (fs !== null) return plainResponse(base, fs[0], fs[1]);
    console.error(`serve: internal error on ${request.method} ${safeUrl(request)}: ${oneLine(e)}`);
    return plainResponse(base, 500, "internal error");
  }
}

function safeUrl(request: Request): string {
  const url = request.url.replace(/[^\x21-\x7e]/g, "?");
  return url.length > 200 ? url.slice(0, 200) + "..." : url;
}

async function answer(
  request: Request,
  root: string,
  options: HandleOptions,
  base: Record<string, string>,
): Promise<Response> {
  const textResponse = (status: number, text: string, extra?: Record<string, string>) =>
    plainResponse(base, status, text, extra);
  const url = new URL(request.url);
  const host = request.headers.get("host") ?? url.host;
  if (!hostAllowed(host, options.port)) {
    return textResponse(403, "forbidden: the Host must be localhost, 127.0.0.1 or [::1]");
  }
  if (request.method !== "GET" && request.method !== "HEAD") {
    return textResponse(405, "method not allowed: only GET and HEAD", { allow: "GET, HEAD" });
  }
  if (url.pathname.length > MAX_PATH_LENGTH) {
    return textResponse(414, `URI too long: the path is over ${MAX_PATH_LENGTH} characters`);
  }
  if (url.pathname === "/") {
    return new Response(null, { status: 302, headers: { ...base, location: "/web/" } });
  }
  const bad = badPath(url.pathname);
  if (bad !== null) return textResponse(400, bad);
  let path = resolvePath(root, url.pathname);
  if (path === null) return textResponse(404, "not found");
  const realRoot = await Deno.realPath(root);
  let info: Deno.FileInfo;
  try {
    // symlinks must not lead out of the repository
    const real = await Deno.realPath(path);
    if (real !== realRoot && !real.startsWith(realRoot.endsWith("/") ? realRoot : realRoot + "/")) {
      return textResponse(404, "not found");
    }
    info = await Deno.stat(real);
    if (info.isDirectory) {
      if (!url.pathname.endsWith("/")) {
        return new Response(null, {
          status: 301,
          headers: { ...base, location: url.pathname + "/" + url.search },
        });
      }
      path = real + "/index.html";
      info = await Deno.stat(path);
    } else if (url.pathname.endsWith("/")) {
      return textResponse(404, "not found"); // a file named as a folder
    } else path = real;
  } catch (e) {
    const fs = fsErrorStatus(e);
    if (fs !== null) return textResponse(fs[0], fs[1]);
    throw e;
  }
  if (!info.isFile) return textResponse(404, "not found");
  const headers = {
    ...base,
    "content-type": CONTENT_TYPES[extension(path)] ?? "application/octet-stream",
    "content-length": String(info.size),
  };
  if (request.method === "HEAD") return new Response(null, { status: 200, headers });
  const file = await Deno.open(path, { read: true });
  return new Response(file.readable, { status: 200, headers });
}

/** Options of {@link startServer}. */
export interface ServeOptions extends HandleOptions {
  /** Port (0: any free one). Default 8000. */
  port?: number;
  /** Interface. Default 127.0.0.1 (loopback only). */
  hostname?: string;
  /** Folder served. Default the repository. */
  root?: string;
  /** Called once listening. */
  onListen?: (addr: Deno.NetAddr) => void;
}

/**
 * Starts the server; `server.addr.port` is the port, `await server.shutdown()` stops it. Requests
 * whose `Host` is not `localhost`, `127.0.0.1` or `[::1]` (with this port or none) get 403.
 */
export function startServer(options: ServeOptions = {}): Deno.HttpServer<Deno.NetAddr> {
  const root = options.root ?? REPO_ROOT;
  let port: number | undefined = undefined;
  const server = Deno.serve(
    {
      port: options.port ?? 8000,
      hostname: options.hostname ?? "127.0.0.1",
      onListen: (addr) => {
        port = addr.port;
        (options.onListen ?? (() => {}))(addr);
      },
      onError: (e) => {
        console.error(`serve: internal error: ${oneLine(e)}`);
        return plainResponse(baseHeaders(options), 500, "internal error");
      },
    },
    // onListen has set the port (the real one when asked for 0) before any request comes
    (request) => handle(request, root, { isolated: options.isolated, port }),
  );
  port = server.addr.port;
  return server;
}

const USAGE = "usage: scripts/serve.ts [--port N] [--no-isolation]";

/** Prints a one-line error and exits with status 2 (a usage or setup error). */
function fail(message: string): never {
  console.error(`error: ${message}`);
  Deno.exit(2);
}

/** The `deno task serve` command line: flags, permissions, then listening. */
async function main(args: string[]): Promise<void> {
  let values: { port?: string; "no-isolation"?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args,
      options: {
        port: { type: "string" },
        "no-isolation": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    const first = (e instanceof Error ? e.message : String(e)).split("\n")[0];
    fail(`${first.replace(/\.? *To specify a positional argument.*$/, "")} (${USAGE})`);
  }
  if (values.help) {
    console.log(
      `${USAGE}\n\nServes the repository on http://localhost:N (default 8000); the page is at /web/.\n--no-isolation: without the COOP/COEP headers, so the page is not cross-origin isolated.`,
    );
    Deno.exit(0);
  }
  const portText = values.port ?? "8000";
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    fail(`--port ${JSON.stringify(portText)} is not a port; use an integer from 0 to 65535`);
  }
  const hostname = "127.0.0.1";
  const net = await Deno.permissions.query({
    name: "net",
    host: port === 0 ? hostname : `${hostname}:${port}`,
  });
  if (net.state !== "granted") {
    fail(
      `no permission to listen on ${hostname}:${port}; run with --allow-net=${hostname} (deno task serve does)`,
    );
  }
  const read = await Deno.permissions.query({ name: "read", path: REPO_ROOT });
  if (read.state !== "granted") {
    fail(
      `no permission to read ${REPO_ROOT}; run from the repository with --allow-read=. (deno task serve does)`,
    );
  }
  const isolated = !values["no-isolation"];
  try {
    startServer({
      port,
      hostname,
      isolated,
      onListen: (addr) =>
        console.error(
          `serving ${REPO_ROOT} at http://localhost:${addr.port}/ (the page: http://localhost:${addr.port}/web/)${
            isolated ? "" : ", not cross-origin isolated"
          }`,
        ),
    });
  } catch (e) {
    if (e instanceof Deno.errors.AddrInUse) {
      fail(`port ${port} is in use; choose another with --port`);
    }
    if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
      fail(`may not listen on ${hostname}:${port}: ${oneLine(e)}`);
    }
    console.error(`error: could not listen on ${hostname}:${port}: ${oneLine(e)}`);
    Deno.exit(1);
  }
}

if (import.meta.main) await main(Deno.args);
