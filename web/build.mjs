// Builds the web client into one directory parleyd can serve (--web-root):
// index.html, style.HASH.css and app.HASH.js, the JavaScript bundled by esbuild with
// the protocol schema (proto/parley.proto, parsed here at build time, so
// the page never fetches or parses .proto text).
//
//   node build.mjs [--outdir DIR] [--dev]
// DIR defaults to web/dist; CMake passes its own build tree's web/.
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import protobuf from "protobufjs";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
let outdir = join(here, "dist");
const i = args.indexOf("--outdir");
if (i >= 0 && args[i + 1]) outdir = resolve(args[i + 1]);
const dev = args.includes("--dev");

const protoPath = join(here, "..", "proto", "parley.proto");
const root = protobuf.parse(readFileSync(protoPath, "utf8"), { keepCase: true }).root;
const schema = JSON.stringify(root.toJSON());

mkdirSync(outdir, { recursive: true });
const result = await esbuild.build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  format: "iife",
  target: ["es2020"],
  minify: !dev,
  sourcemap: dev ? "inline" : false,
  write: false,
  logLevel: "warning",
  plugins: [
    {
      // import schema from "parley-schema": the parsed proto as JSON.
      name: "parley-schema",
      setup(b) {
        b.onResolve({ filter: /^parley-schema$/ }, () => ({ path: "schema", namespace: "parley" }));
        b.onLoad({ filter: /.*/, namespace: "parley" }, () => ({ contents: schema, loader: "json" }));
      },
    },
  ],
});

// app.HASH.js and style.HASH.css: parleyd lets browsers keep names with a
// content hash for good (index.html, which names them, is revalidated).
function hashed(base, ext, content) {
  let h = createHash("sha256").update(content).digest("hex").slice(0, 12);
  if (!/[0-9]/.test(h)) h = "0" + h.slice(1); // parleyd wants a digit in a hash
  return `${base}.${h}.${ext}`;
}
for (const f of readdirSync(outdir)) {
  if (/^(app|style)\.[0-9a-f]{12}\.(js|css)$/.test(f)) rmSync(join(outdir, f));
}
const js = result.outputFiles[0].contents;
const css = readFileSync(join(here, "style.css"));
const jsName = hashed("app", "js", js);
const cssName = hashed("style", "css", css);
writeFileSync(join(outdir, jsName), js);
writeFileSync(join(outdir, cssName), css);
const html = readFileSync(join(here, "index.html"), "utf8");
if (!html.includes('src="app.js"') || !html.includes('href="style.css"')) throw new Error("index.html must name app.js and style.css");
writeFileSync(join(outdir, "index.html"), html.replace('src="app.js"', `src="${jsName}"`).replace('href="style.css"', `href="${cssName}"`));
writeFileSync(join(outdir, ".built"), new Date().toISOString() + "\n");
console.log(`web: built ${outdir} (${jsName}, ${Math.round(js.length / 1024)} KiB)`);
