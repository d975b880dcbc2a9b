// Compact, deterministic renderings of the core's messages and entries for the traces of
// the interaction tests: `1->2 append term=1 prev=1/1 entries=[2/1 a=1] commit=1 seq=2`.

import type { Entry, HardState, Message } from '../../ranges/core/types.ts';

const decoder = new TextDecoder();

export function fmtEntry(e: Entry): string {
  const what = e.kind === 'normal' ? decoder.decode(e.data) : e.kind;
  return `${e.index}/${e.term} ${what}`;
}

export const fmtEntries = (es: readonly Entry[]): string => `[${es.map(fmtEntry).join(', ')}]`;

export function fmtMessage(m: Message): string {
  const head = `${m.from}->${m.to} ${m.type} term=${m.term}`;
  switch (m.type) {
    case 'prevote':
    case 'vote':
      return `${head} last=${m.lastIndex}/${m.lastTerm}${m.transfer ? ' transfer' : ''}`;
    case 'prevoteResponse':
    case 'voteResponse':
      return `${head}${m.reject ? ' reject' : ''}`;
    case 'append':
      return (
        `${head} prev=${m.prevIndex}/${m.prevTerm} entries=${fmtEntries(m.entries)}` +
        ` commit=${m.commit} seq=${m.seq}${m.commitOnly ? ' commitOnly' : ''}`
      );
    case 'appendResponse':
      return m.reject
        ? `${head} reject index=${m.index} hint=${m.hint} seq=${m.seq}`
        : `${head} index=${m.index} seq=${m.seq}`;
    case 'heartbeat':
      return `${head} commit=${m.commit} seq=${m.seq}${m.quiesce ? ' quiesce' : ''}`;
    case 'heartbeatResponse':
      return `${head} seq=${m.seq}`;
    case 'snapshot':
      return (
        `${head} snap=${m.meta.index}/${m.meta.term} offset=${m.offset} bytes=${m.data.length}` +
        `${m.done ? ' done' : ''} seq=${m.seq}`
      );
    case 'snapshotResponse':
      return (
        `${head} index=${m.index} offset=${m.offset}${m.done ? ' done' : ''}` +
        `${m.reject ? ' reject' : ''} seq=${m.seq}`
      );
    case 'timeoutNow':
      return head;
  }
}

export const fmtHardState = (hs: HardState): string =>
  `term=${hs.term} vote=${hs.vote} commit=${hs.commit}`;

export function fmtMs(ms: number): string {
  if (ms === Number.NEGATIVE_INFINITY) return '-inf';
  return String(Math.round(ms * 1000) / 1000);
}
