// Validates an AsyncAPI document with the official parser (file $refs resolved relative to
// the document): prints every diagnostic, exits 1 on any error or warning.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Parser } from '@asyncapi/parser';

const file = resolve(process.argv[2]);
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(file, 'utf8'), {
  source: pathToFileURL(file).href,
});
const severities = ['error', 'warning', 'info', 'hint'];
let bad = 0;
for (const d of diagnostics) {
  const where = (d.path || []).join('/');
  console.log(`${severities[d.severity] || d.severity}: ${where}: ${d.message}`);
  if (d.severity <= 1) bad += 1;
}
if (!document || bad) {
  console.error(`${file}: ${bad} problem(s)`);
  process.exit(1);
}
const channels = document.channels().all().map((c) => c.address()).join(', ');
console.log(`valid: ${file} (AsyncAPI ${document.version()}; channels: ${channels})`);
