// The V8 flags nodes run with (src/cli/node-flags.ts) must be on bin/rasputin.mjs's first
// line too: that is how a user's `rasputin start` gets them.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { nodeV8Flags } from '../../src/cli/node-flags.ts';

describe('node V8 flags', () => {
  it('bin/rasputin.mjs starts node with every one of them', () => {
    const bin = readFileSync(join(import.meta.dirname, '../../bin/rasputin.mjs'), 'utf8');
    const first = bin.split('\n')[0]!;
    expect(first.startsWith('#!/usr/bin/env -S node ')).toBe(true);
    expect(first.split(/\s+/).slice(3)).toEqual([...nodeV8Flags]);
  });
});
