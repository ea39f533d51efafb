import test from 'ava';
import { Controller } from '../../controller/index.js';
import { parseConfig } from '../../mesh/index.js';
import { waitFor } from '../../testkit/index.js';
import type { MeshView } from '../../ui/index.js';
import { controllerWorld } from '../controller/harness.js';

test('a controller with a ui: section serves the mesh view itself, on loopback, with its registration visible', async (t) => {
  const world = await controllerWorld(t);
  const east = await world.pki.cluster('east');
  const config = parseConfig('cluster', { ...structuredClone(world.config()), ui: { port: 0, refreshMs: 200 } });
  t.is(config.ui?.host, '127.0.0.1', 'loopback unless said otherwise');
  const controller = new Controller({ config, intermediate: east.ca });
  t.teardown(() => controller.stop());
  await controller.start();
  const url = controller.meshViewUrl;
  t.regex(url ?? '', /^http:\/\/127\.0\.0\.1:\d+\/$/);

  const view = await waitFor(async () => {
    const r = await fetch(new URL('api/mesh', url));
    const v = r.status === 200 ? ((await r.json()) as MeshView) : undefined;
    return v?.clusters[0]?.controllerReady ? v : undefined;
  }, { timeoutMs: 30_000, what: "the controller's own registration in its view" });
  t.is(view.seenFrom, 'east');
  t.like(view.clusters[0], { name: 'east', locality: 'eu/eu-1', local: true, controllers: 1 });
  t.is((await fetch(new URL('api/mesh', url), { method: 'DELETE' })).status, 405);
  // The view's metrics go into the controller's registry (served on its metrics port too).
  const metrics = await (await fetch(`http://127.0.0.1:${controller.metricsPort}/metrics`)).text();
  t.regex(metrics, /causeway_ui_view_reads_total\{result="ok",component="controller"\} [1-9]/);

  await controller.stop();
  await t.throwsAsync(fetch(new URL('api/mesh', url)), undefined, 'the view stops with the controller');
});

test('without a ui: section the controller serves no view, and a non-loopback ui.host without allowRemote stops its start', async (t) => {
  const world = await controllerWorld(t);
  const east = await world.pki.cluster('east');
  const plain = new Controller({ config: world.config(), intermediate: east.ca });
  t.teardown(() => plain.stop());
  await plain.start();
  t.is(plain.meshViewUrl, undefined);
  await plain.stop();

  const open = new Controller({ config: parseConfig('cluster', { ...structuredClone(world.config()), ui: { host: '0.0.0.0', port: 0 } }), intermediate: east.ca });
  t.teardown(() => open.stop());
  const error = await t.throwsAsync(open.start());
  t.is((error as { code?: string }).code, 'CW_UI_REMOTE_BIND_REFUSED');
});
