/**
 * The app of bench/grpc.ts: a unary gRPC echo over h2c (prior knowledge) on
 * 127.0.0.1:<argv[2]>, on node:http2 directly — every call answered with its own message,
 * `grpc-status: 0` in the trailers — so the app costs the same on every path measured.
 */
import { createServer } from 'node:http2';

const server = createServer();
server.on('stream', (stream) => {
  const chunks = [];
  stream.on('error', () => {});
  stream.on('data', (chunk) => chunks.push(chunk));
  stream.once('end', () => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    stream.end(Buffer.concat(chunks));
  });
});
server.listen(Number(process.argv[2]), '127.0.0.1', () => process.stdout.write(`listening ${server.address().port}\n`));
process.once('SIGTERM', () => process.exit(0));
