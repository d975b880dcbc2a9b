// Installs what `npm start` and `npm test` need on a fresh machine with only Node.js and
// npm: the npm packages (npm ci) and nats-server (from the OS packages when we may
// install them; otherwise a message saying how). Idempotent and quiet when all is there.
import { execSync, spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd) => execSync(cmd, { cwd: root, stdio: 'inherit' });

const marker = join(root, 'node_modules', '.package-lock.json');
const lock = join(root, 'package-lock.json');
if (!existsSync(marker) || statSync(lock).mtimeMs > statSync(marker).mtimeMs) {
  console.log('setup: installing npm packages (npm ci)...');
  run('npm ci --no-audit --no-fund');
}

const has = (cmd) => spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0;
if (!has('nats-server')) {
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  const sudo = !root && has('sudo') && spawnSync('sudo', ['-n', 'true']).status === 0;
  if (has('apt-get') && (root || sudo)) {
    const pre = root ? '' : 'sudo -n ';
    console.log('setup: installing nats-server from the OS packages...');
    run(`${pre}apt-get update -qq`);
    run(`${pre}env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server`);
  } else {
    console.error(
      'setup: nats-server is missing and cannot be installed from here.\n' +
        '  Debian/Ubuntu: sudo apt-get install -y nats-server\n' +
        '  macOS: brew install nats-server\n' +
        '  elsewhere: https://docs.nats.io/running-a-nats-service/introduction/installation',
    );
    process.exit(1);
  }
}
