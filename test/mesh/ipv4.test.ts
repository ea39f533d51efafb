import test from 'ava';
import { formatIpv4, parseIpv4, parseIpv4Cidr } from '../../mesh/index.js';

test('IPv4 addresses and CIDRs round-trip; a CIDR is masked to its network', (t) => {
  t.is(parseIpv4('127.1.0.2'), 0x7f010002);
  t.is(formatIpv4(0x7f010002), '127.1.0.2');
  t.deepEqual(parseIpv4Cidr('127.1.2.3/16'), { base: 0x7f010000, prefix: 16 });
  t.deepEqual(parseIpv4Cidr('0.0.0.0/0'), { base: 0, prefix: 0 });
});

test('anything else is refused, never guessed', (t) => {
  for (const bad of ['', '127.1.0', '127.1.0.256', '127.1.0.2.3', ' 127.1.0.2', '1e2.0.0.1', '::1']) t.is(parseIpv4(bad), undefined, bad);
  for (const bad of ['127.1.0.0', '127.1.0.0/33', '127.1.0.0/-1', '127.1.0.0/', 'x/8', '127.1.0.0/16/2']) t.is(parseIpv4Cidr(bad), undefined, bad);
});
