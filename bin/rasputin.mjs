#!/usr/bin/env -S node --max-semi-space-size=4
// (The flag on the first line: src/cli/node-flags.ts says why; keep the two the same.)
// The `rasputin` command: runs the build in dist/ (npm run build), or the TypeScript
// sources through tsx when there is no build (a development checkout).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const built = join(root, 'dist', 'src', 'cli', 'main.js');
if (existsSync(built)) {
  await import(pathToFileURL(built).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import(pathToFileURL(join(root, 'src', 'cli', 'main.ts')).href);
}
