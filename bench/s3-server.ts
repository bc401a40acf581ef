/**
 * s3rver (the S3-compatible server the tests use) as a process of its own, for benchmarks: its
 * work then does not delay the clocks of the process that measures. Serves S3RVER_DIR on a free
 * loopback port and writes its endpoint to S3RVER_ENDPOINT_FILE once it listens; stops on SIGTERM.
 */
import fs from 'node:fs';
import S3rver from 's3rver';

const directory = process.env['S3RVER_DIR'];
const endpointFile = process.env['S3RVER_ENDPOINT_FILE'];
if (!directory || !endpointFile) throw new Error('set S3RVER_DIR and S3RVER_ENDPOINT_FILE');
fs.mkdirSync(directory, { recursive: true });
const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory });
const { port } = await server.run();
fs.writeFileSync(`${endpointFile}.tmp`, `http://127.0.0.1:${port}\n`);
fs.renameSync(`${endpointFile}.tmp`, endpointFile);
process.once('SIGTERM', () => void server.close().finally(() => process.exit(0)));
