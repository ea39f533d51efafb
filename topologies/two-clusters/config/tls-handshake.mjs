// One TLS handshake as a peer would make it, for the root-rotation scenario: does the server's
// chain verify against --ca alone, and (with --request) does the server accept our client
// certificate and answer? Plain Node (the image has no openssl), so it runs in every service
// that mounts /config.
//
//   node /config/tls-handshake.mjs --connect HOST:PORT --ca ROOTS.pem [--servername SNI]
//        [--cert CHAIN.pem --key KEY.pem] [--alpn h2] [--request /path]
//
// Prints `server: verified|NOT verified …` and, with --request, `request: answered <status>` or
// `request: refused (<reason>)`. Exit 0 only if the server verified and, with --request, answered 2xx.
import { readFileSync } from 'node:fs';
import { connect } from 'node:tls';

const flags = {};
for (let i = 2; i < process.argv.length; i += 2) {
  const name = process.argv[i];
  const value = process.argv[i + 1];
  if (!name?.startsWith('--') || value === undefined) {
    console.error(`usage: tls-handshake.mjs --connect HOST:PORT --ca FILE [--servername SNI] [--cert FILE --key FILE] [--alpn PROTO] [--request PATH] (bad argument ${name})`);
    process.exit(2);
  }
  flags[name.slice(2)] = value;
}
if (!flags.connect || !flags.ca) {
  console.error('--connect HOST:PORT and --ca FILE are required');
  process.exit(2);
}
const [host, port] = flags.connect.split(':');
const socket = connect({
  host,
  port: Number(port),
  servername: flags.servername,
  ca: readFileSync(flags.ca, 'utf8'),
  ...(flags.cert ? { cert: readFileSync(flags.cert, 'utf8'), key: readFileSync(flags.key, 'utf8') } : {}),
  ...(flags.alpn ? { ALPNProtocols: [flags.alpn] } : {}),
  // Verified below and reported: a refusal is the answer we may be looking for.
  rejectUnauthorized: false,
  // Workload certificates name a SPIFFE ID, not a host name.
  checkServerIdentity: () => undefined,
});
const timer = setTimeout(() => finish(false, 'request: refused (no answer within 10 s)'), 10_000);
let verified = false;
let answer = '';

function finish(ok, line) {
  clearTimeout(timer);
  if (line) console.log(line);
  socket.destroy();
  process.exit(ok ? 0 : 1);
}

socket.once('secureConnect', () => {
  verified = socket.authorized;
  const peer = socket.getPeerCertificate();
  console.log(`server: ${verified ? 'verified' : `NOT verified (${socket.authorizationError})`} against ${flags.ca}; it presented ${peer.subjectaltname ?? peer.subject?.CN ?? 'no name'}, issued by ${peer.issuer?.OU ?? peer.issuer?.CN ?? '?'}`);
  if (!flags.request) return finish(verified);
  socket.write(`GET ${flags.request} HTTP/1.1\r\nHost: ${flags.servername ?? host}\r\nConnection: close\r\n\r\n`);
});
socket.on('data', (chunk) => {
  answer += chunk;
  const status = /^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1];
  if (status) finish(verified && status.startsWith('2'), `request: answered ${status}`);
});
socket.once('error', (error) => finish(false, verified || flags.request ? `request: refused (${error.message})` : `server: handshake failed (${error.message})`));
socket.once('end', () => finish(false, 'request: refused (closed without an answer)'));
