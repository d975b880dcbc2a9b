// Commands for the storage tests, from strings: set, cas, del and split as a client's
// request (or the node's split proposal) becomes them. An id of '' is no request id.

import type { Command } from '../../src/storage/commands.ts';

const b = (s: string): Buffer => Buffer.from(s);

export const set = (key: string, value: string, id = ''): Command => ({
  op: 'set',
  key: b(key),
  value: b(value),
  id: b(id),
});

export const cas = (key: string, expect: string | null, value: string, id = ''): Command => ({
  op: 'cas',
  key: b(key),
  expect: expect === null ? null : b(expect),
  value: b(value),
  id: b(id),
});

export const del = (key: string, id = ''): Command => ({ op: 'del', key: b(key), id: b(id) });

export const split = (key: string, generation: number, rightId: number): Command => ({
  op: 'split',
  key: b(key),
  generation,
  rightId,
  id: new Uint8Array(0),
});
