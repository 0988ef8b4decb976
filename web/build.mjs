// Builds the web client into one directory parleyd can serve (--web-root):
// index.html, style.css and app.js, the JavaScript bundled by esbuild with
// the protocol schema (proto/parley.proto, parsed here at build time, so
// the page never fetches or parses .proto text).
//
//   node build.mjs [--outdir DIR] [--dev]
// DIR defaults to web/dist; CMake passes its own build tree's web/.
import { readFileSync, mkdirSync, copyFileSync, writeFileSync } from "node:fs";
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
await esbuild.build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  format: "iife",
  target: ["es2020"],
  minify: !dev,
  sourcemap: dev ? "inline" : false,
  outfile: join(outdir, "app.js"),
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
for (const f of ["index.html", "style.css"]) copyFileSync(join(here, f), join(outdir, f));
writeFileSync(join(outdir, ".built"), new Date().toISOString() + "\n");
console.log("web: built " + outdir);
