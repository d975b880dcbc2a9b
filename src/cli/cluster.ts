// `rasputin cluster`: a local cluster for trying Rasputin: a nats-server on loopback (on
// NATS's default port 4222 when it is free, else on a free port) and N nodes with their
// data under one directory. Prints where everything is and how to use it; Ctrl-C or
// SIGTERM stops every process it started, by PID.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { missingNodeV8Flags } from './node-flags.ts';
import { collectStatus } from './status.ts';

const natsDefaultPort = 4222;

async function portFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const srv = createServer();
    srv.once('error', () => done(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => done(true)));
  });
}

async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => done(port));
    });
  });
}

function hasNatsServer(): boolean {
  return spawnSync('nats-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

function waitForLine(child: ChildProcess, needle: string, timeoutMs: number): Promise<void> {
  return new Promise((done, fail) => {
    let seen = '';
    const timer = setTimeout(
      () => fail(new Error(`no "${needle}" within ${timeoutMs} ms:\n${seen}`)),
      timeoutMs,
    );
    const onData = (chunk: Buffer) => {
      seen += chunk.toString();
      if (seen.includes(needle)) {
        clearTimeout(timer);
        done();
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`exited with ${code} before "${needle}":\n${seen}`));
    });
  });
}

/** `rasputin cluster`'s split threshold: 64 KiB (a node's default is 64 MiB). */
const demoSplitBytes = 64 * 1024;

export async function runCluster(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      dir: { type: 'string' },
      nodes: { type: 'string' },
      'split-bytes': { type: 'string' },
    },
    strict: true,
  });
  const count = Number(values.nodes ?? 3);
  if (!Number.isInteger(count) || count < 1 || count > 7) {
    console.error('--nodes must be 1 to 7');
    return 2;
  }
  if (!hasNatsServer()) {
    console.error(
      'nats-server is not on PATH. Install it (Debian/Ubuntu: sudo apt-get install -y nats-server;\n' +
        'elsewhere: https://docs.nats.io/running-a-nats-service/introduction/installation), then retry.',
    );
    return 1;
  }
  // Small, so that a demo with a few thousand keys shows automatic splits.
  const splitBytes = values['split-bytes'] ?? String(demoSplitBytes);
  if (!/^[1-9][0-9]*$/.test(splitBytes)) {
    console.error('--split-bytes must be a positive integer');
    return 2;
  }
  const dir = resolve(values.dir ?? '.rasputin-cluster');
  mkdirSync(dir, { recursive: true });
  const port = (await portFree(natsDefaultPort)) ? natsDefaultPort : await freePort();
  const url = `nats://127.0.0.1:${port}`;
  const children: ChildProcess[] = [];
  let stopping = false;
  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    console.log('\nstopping the cluster...');
    const exits = children.map(
      (c) =>
        new Promise<void>((done) => (c.exitCode !== null ? done() : c.once('exit', () => done()))),
    );
    // Nodes first, then nats-server.
    for (const c of children.slice(1)) c.kill('SIGTERM');
    await Promise.race([Promise.all(exits.slice(1)), new Promise((r) => setTimeout(r, 5000))]);
    children[0]?.kill('SIGTERM');
    await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 3000))]);
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    console.log('stopped.');
    process.exit(code);
  };
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));

  const nats = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(nats);
  try {
    await waitForLine(nats, 'Server is ready', 10_000);
  } catch (err) {
    console.error(`nats-server did not start: ${(err as Error).message}`);
    await stopAll(1);
    return 1;
  }
  console.log(`nats-server  pid ${nats.pid}  ${url}`);
  const ids = Array.from({ length: count }, (_, i) => `n${i + 1}`);
  const entry = process.argv[1]!;
  for (const id of ids) {
    const child = spawn(
      process.execPath,
      [
        ...missingNodeV8Flags(),
        ...process.execArgv,
        entry,
        'start',
        '--node-id',
        id,
        '--nats',
        url,
        '--storage-dir',
        join(dir, id),
        '--initial-nodes',
        ids.join(','),
        '--logfile',
        join(dir, `${id}.log`),
        '--split-bytes',
        splitBytes,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(child);
    try {
      await waitForLine(child, 'ready', 30_000);
    } catch (err) {
      console.error(`node ${id} did not start: ${(err as Error).message}`);
      await stopAll(1);
      return 1;
    }
    console.log(
      `node ${id}      pid ${child.pid}  data ${join(dir, id)}  log ${join(dir, `${id}.log`)}`,
    );
    child.on('exit', (code) => {
      if (!stopping) console.error(`node ${id} exited (${code}); see ${join(dir, `${id}.log`)}`);
    });
  }
  // Ready when a leader is elected.
  let leader = '';
  for (let i = 0; i < 60 && !leader; i++) {
    const nodes = await collectStatus(url, 'rasputin', 300);
    leader =
      nodes.flatMap((n) => n.ranges.filter((r) => r.role === 'leader').map(() => n.node))[0] ?? '';
  }
  const env = port === natsDefaultPort ? '' : `RASPUTIN_NATS=${url} `;
  console.log(`
cluster ready: ${count} nodes, leader ${leader || '(electing)'}; data under ${dir}

try it (in another terminal):
  ${env}npx rasputin set greeting hello
  ${env}npx rasputin get greeting
  ${env}npx rasputin status
  ${env}npx rasputin split m        (or write more than 64 KiB: ranges split by size)
  ${env}npx rasputin ranges
or from code:  await Client.connect({ servers: '${url}' })

Ctrl-C stops everything.`);
  return -1; // keep running until a signal
}
