import type { Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from '../shared/logger.js';

/**
 * Requests Node's HTTP parser refuses before Express sees them (a broken request line, a bad
 * header, headers too large, a slow client): Node would answer a bare 400 with no body. They get
 * the API's error shape too, so every malformed request reads the same to a client.
 */
export function answerClientErrors(server: Server, logger: Logger): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const [status, reason, code, message] =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'Request Header Fields Too Large', 'headers_too_large', 'The request headers are larger than the service accepts.']
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, 'Request Timeout', 'request_timeout', 'The request did not arrive in time.']
          : [400, 'Bad Request', 'malformed_http', 'The request is not well-formed HTTP/1.1.'];
    logger.info({ code: err.code, status }, 'malformed HTTP request refused');
    const body = JSON.stringify({ error: { code, message } });
    socket.end(
      `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
}
