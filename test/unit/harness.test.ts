// The integration harness itself: nats-server and node processes are started, tracked and
// stopped by PID. Nodes are played by a small fake script (the node CLI is tested by the
// integration tests).

import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  freePort,
  loopbackHost,
  pidAlive,
  startNatsServer,
  startNode,
} from '../integration/harness.ts';

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('error', () => done(false));
    socket.connect(port, loopbackHost, () => done(true));
  });
}

describe('harness: nats-server', () => {
  it('freePort gives a usable loopback port', async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    expect(port).toBeLessThan(65536);
  });

  it('starts, restarts and stops nats-server by PID', async () => {
    const nats = await startNatsServer();
    try {
      const firstPid = nats.pid;
      expect(nats.url).toBe(`nats://127.0.0.1:${nats.port}`);
      expect(pidAlive(firstPid)).toBe(true);
      expect(await accepts(nats.port)).toBe(true);

      await nats.restart();
      expect(nats.pid).not.toBe(firstPid);
      expect(pidAlive(firstPid)).toBe(false);
      expect(pidAlive(nats.pid)).toBe(true);
      expect(await accepts(nats.port)).toBe(true);
    } finally {
      await nats.stop();
    }
    expect(pidAlive(nats.pid)).toBe(false);
    expect(await accepts(nats.port)).toBe(false);
  });
});

describe('harness: node processes (a fake node script)', () => {
  let dir = '';
  let fakeNode = '';
  let slowNode = '';
  let stubbornNode = '';

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rasputin-harness-'));
    fakeNode = join(dir, 'fake-node.mjs');
    await writeFile(
      fakeNode,
      [
        "console.log('args ' + JSON.stringify(process.argv.slice(2)));",
        "console.error('a line on stderr');",
        "console.log('env ' + (process.env.FAKE_FLAVOR ?? ''));",
        "setTimeout(() => console.log('node is ready'), 50);",
        "process.on('SIGTERM', () => { console.log('bye'); process.exit(0); });",
        'setInterval(() => {}, 1000);',
      ].join('\n'),
    );
    slowNode = join(dir, 'slow-node.mjs');
    await writeFile(slowNode, "console.log('starting'); setInterval(() => {}, 1000);\n");
    stubbornNode = join(dir, 'stubborn-node.mjs');
    await writeFile(
      stubbornNode,
      [
        "process.on('SIGTERM', () => console.log('ignoring SIGTERM'));",
        "console.log('ready');",
        'setInterval(() => {}, 1000);',
      ].join('\n'),
    );
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('waits for ready, collects output and a log file, and kill waits for the exit', async () => {
    const storageDir = join(dir, 'a');
    const node = await startNode({
      nodeId: 'a',
      natsUrl: 'nats://127.0.0.1:1',
      storageDir,
      initialNodes: ['a', 'b', 'c'],
      env: { FAKE_FLAVOR: 'vanilla' },
      entry: fakeNode,
    });
    expect(pidAlive(node.pid)).toBe(true);
    expect(node.output.some((l) => l.includes('node is ready'))).toBe(true);
    const args = node.output.find((l) => l.startsWith('args '))!;
    expect(JSON.parse(args.slice(5))).toEqual([
      'start',
      '--node-id',
      'a',
      '--nats',
      'nats://127.0.0.1:1',
      '--storage-dir',
      storageDir,
      '--initial-nodes',
      'a,b,c',
    ]);
    expect(node.output).toContain('env vanilla');
    // stderr is another pipe: its line may arrive after stdout's "ready".
    for (let i = 0; i < 100 && !node.output.includes('[stderr] a line on stderr'); i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(node.output).toContain('[stderr] a line on stderr');
    expect(await node.waitForLine(/^env /, 1000)).toBe('env vanilla');

    await node.kill();
    expect(pidAlive(node.pid)).toBe(false);
    expect(node.running()).toBe(false);
    expect(node.output).toContain('bye');
    expect(await node.exited).toEqual({ code: 0, signal: null });
    expect(node.logFile).toBe(join(dir, 'a.log'));
    expect(readFileSync(node.logFile, 'utf8')).toContain('node is ready');
  });

  it('rejects with the output when a node is not ready in time, and kills it', async () => {
    const failure = startNode({
      nodeId: 'b',
      natsUrl: 'nats://127.0.0.1:1',
      storageDir: join(dir, 'b'),
      initialNodes: 'a,b,c',
      entry: slowNode,
      // Long enough for the process to start and print 'starting' on a loaded machine
      // (tsx's loader alone can take over half a second there).
      readyTimeoutMs: 3000,
    });
    const err = (await failure.catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/printed no stdout line containing 'ready'[\s\S]*starting/);
    const pid = Number(/\(pid (\d+)\)/.exec(err.message)?.[1]);
    expect(pid).toBeGreaterThan(0);
    expect(pidAlive(pid)).toBe(false);
  });

  it('rejects with the output when a node exits before ready', async () => {
    const failure = startNode({
      nodeId: 'c',
      natsUrl: 'nats://127.0.0.1:1',
      storageDir: join(dir, 'c'),
      initialNodes: 'a,b,c',
      entry: join(dir, 'missing.mjs'),
    });
    await expect(failure).rejects.toThrow(/exited[\s\S]*missing\.mjs/);
  });

  it('kill9 kills at once, even a node that ignores SIGTERM', async () => {
    const node = await startNode({
      nodeId: 'd',
      natsUrl: 'nats://127.0.0.1:1',
      storageDir: join(dir, 'd'),
      initialNodes: ['d'],
      entry: stubbornNode,
    });
    await node.kill9();
    expect(pidAlive(node.pid)).toBe(false);
    expect((await node.exited).signal).toBe('SIGKILL');
    expect(existsSync(join(dir, 'd.log'))).toBe(true);
  });
});
