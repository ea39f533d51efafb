/**
 * The floor of an HTTP/2 sidecar on Node's http2 module, for bench/grpc.ts: the least a
 * relay built on it can do per stream — no policy, no balancing, no retries, no
 * metrics, no logs, one upstream session — with the same hops as a Causeway sidecar and
 * as HAProxy in that benchmark:
 *
 *   client <port> <gatewayPort> <sni> <pem> <caFile>:  h2c listener ─► TLS (client certificate, SNI, ALPN h2) to the gateway
 *   server <port> <appPort> <pem> <caFile>:            TLS listener (client certificate required, ALPN h2) ─► h2c to the app
 *
 * Each stream is piped both ways with its trailers. What this process costs per call is
 * what Node's http2 streams cost on both sides of a relay: a sidecar on this module cannot
 * go below it, whatever its own code does.
 */
import { readFileSync } from 'node:fs';
import { connect, createSecureServer, createServer } from 'node:http2';
import { connect as tlsConnect } from 'node:tls';

const [mode, port, ...rest] = process.argv.slice(2);

/** Pipes one downstream stream to a new stream on `session`, and its response (trailers included) back. */
function relay(session, downstream, headers) {
  const upstream = session.request(headers);
  upstream.on('error', () => {});
  downstream.on('error', () => {});
  downstream.pipe(upstream);
  let trailers;
  upstream.once('trailers', (t) => (trailers = t));
  upstream.once('response', (response) => {
    if (downstream.destroyed) return;
    downstream.respond(response, { waitForTrailers: true });
    downstream.once('wantTrailers', () => (trailers ? downstream.sendTrailers(trailers) : downstream.close()));
    upstream.pipe(downstream);
  });
  upstream.once('close', () => {
    if (!downstream.headersSent && !downstream.destroyed) downstream.close(2);
  });
}

if (mode === 'client') {
  const [gatewayPort, sni, pemFile, caFile] = rest;
  const pem = readFileSync(pemFile);
  const session = connect(`https://${sni}`, {
    createConnection: () => tlsConnect({ host: '127.0.0.1', port: Number(gatewayPort), servername: sni, ALPNProtocols: ['h2'], key: pem, cert: pem, ca: readFileSync(caFile) }),
  });
  session.on('error', (e) => process.stderr.write(`upstream session: ${e.message}\n`));
  const server = createServer();
  server.on('stream', (stream, headers) => relay(session, stream, headers));
  server.listen(Number(port), '127.0.0.1', () => process.stdout.write('READY\n'));
} else if (mode === 'server') {
  const [appPort, pemFile, caFile] = rest;
  const pem = readFileSync(pemFile);
  const app = connect(`http://127.0.0.1:${appPort}`);
  app.on('error', (e) => process.stderr.write(`app session: ${e.message}\n`));
  const server = createSecureServer({ key: pem, cert: pem, ca: readFileSync(caFile), requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['h2'] });
  server.on('stream', (stream, headers) => relay(app, stream, headers));
  server.listen(Number(port), '127.0.0.1', () => process.stdout.write('READY\n'));
} else {
  process.stderr.write('usage: h2-relay-floor.mjs client <port> <gatewayPort> <sni> <pem> <caFile> | server <port> <appPort> <pem> <caFile>\n');
  process.exit(2);
}
