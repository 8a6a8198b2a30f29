// Parse and validate an AsyncAPI document with the AsyncAPI parser (references to files
// resolved relative to it). Prints {"errors": [...], "warnings": [...]} and exits 1 on errors.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const path = resolve(process.argv[2] ?? "docs/asyncapi.yaml");
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(path, "utf8"), {
  source: path,
});
const show = (d) => ({ code: d.code, message: d.message, path: d.path.join(".") });
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error).map(show);
const warnings = diagnostics.filter((d) => d.severity !== DiagnosticSeverity.Error).map(show);
const messages = document ? document.allMessages().all().map((m) => m.name()) : [];
console.log(JSON.stringify({ errors, warnings, messages }, null, 1));
process.exit(errors.length || !document ? 1 : 0);
