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
}

function baseHeaders(options: HandleOptions): Record<string, string> {
  return (options.isolated ?? true) ? { ...ISOLATION_HEADERS, ...COMMON_HEADERS } : COMMON_HEADERS;
}

/** The repository root: the folder above this script. */
export const REPO_ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname);

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

/** Handles one request for files under `root` (exported for tests). */
export async function handle(
  request: Request,
  root: string = REPO_ROOT,
  options: HandleOptions = {},
): Promise<Response> {
  const base = baseHeaders(options);
  const textResponse = (status: number, text: string, extra?: Record<string, string>) =>
    plainResponse(base, status, text, extra);
  if (request.method !== "GET" && request.method !== "HEAD") {
    return textResponse(405, "method not allowed: only GET and HEAD", { allow: "GET, HEAD" });
  }
  const url = new URL(request.url);
  if (url.pathname === "/") {
    return new Response(null, { status: 302, headers: { ...base, location: "/web/" } });
  }
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
    } else path = real;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
      return textResponse(404, "not found");
    }
    if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
      return textResponse(403, "forbidden");
    }
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

/** Starts the server; `server.addr.port` is the port, `await server.shutdown()` stops it. */
export function startServer(options: ServeOptions = {}): Deno.HttpServer<Deno.NetAddr> {
  const root = options.root ?? REPO_ROOT;
  return Deno.serve({
    port: options.port ?? 8000,
    hostname: options.hostname ?? "127.0.0.1",
    onListen: options.onListen ?? (() => {}),
  }, (request) => handle(request, root, { isolated: options.isolated }));
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      port: { type: "string" },
      "no-isolation": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    console.log(
      "usage: scripts/serve.ts [--port N] [--no-isolation]\n\nServes the repository on http://localhost:N (default 8000); the page is at /web/.\n--no-isolation: without the COOP/COEP headers, so the page is not cross-origin isolated.",
    );
    Deno.exit(0);
  }
  const port = values.port === undefined ? 8000 : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`error: --port ${values.port} is out of range; use an integer from 0 to 65535`);
    Deno.exit(2);
  }
  try {
    const isolated = !values["no-isolation"];
    startServer({
      port,
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
      console.error(`error: port ${port} is in use; choose another with --port`);
      Deno.exit(2);
    }
    throw e;
  }
}
