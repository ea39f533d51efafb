import { Snapshot, SnapshotService, formatPath } from '../mesh/index.js';

export type DecodedSnapshot = { readonly ok: true; readonly snapshot: Snapshot } | { readonly ok: false; readonly reason: string };

const describe = (issues: ReadonlyArray<{ path: PropertyKey[]; message: string }>, prefix: readonly PropertyKey[] = []) =>
  issues
    .slice(0, 3)
    .map((i) => `${formatPath([...prefix, ...i.path])}: ${i.message}`)
    .join('; ');

/**
 * Validates discovery snapshots with mesh/snapshot.ts, re-validating only the services
 * that changed since the previous snapshot: validating 10,000 targets costs far more
 * than re-serialising them to compare, and a push usually changes one service. The
 * result is exactly what `Snapshot.parse` returns; unchanged services are the same
 * (read-only) objects as in the previous snapshot.
 */
export class SnapshotDecoder {
  #validated = new Map<string, SnapshotService>();

  decode(json: string): DecodedSnapshot {
    let raw: unknown;
    try {
      raw = JSON.parse(json);
    } catch (error) {
      return { ok: false, reason: `snapshot is not JSON: ${(error as Error).message}` };
    }
    if (typeof raw !== 'object' || raw === null || !Array.isArray((raw as { services?: unknown }).services)) {
      return { ok: false, reason: 'snapshot does not match the schema: services: expected an array' };
    }
    const rawServices = (raw as { services: unknown[] }).services;
    const envelope = Snapshot.safeParse({ ...raw, services: [] });
    if (!envelope.success) return { ok: false, reason: `snapshot does not match the schema: ${describe(envelope.error.issues)}` };
    const next = new Map<string, SnapshotService>();
    const services: SnapshotService[] = [];
    for (let i = 0; i < rawServices.length; i++) {
      const key = JSON.stringify(rawServices[i]);
      let service = next.get(key) ?? this.#validated.get(key);
      if (!service) {
        const parsed = SnapshotService.safeParse(rawServices[i]);
        if (!parsed.success) return { ok: false, reason: `snapshot does not match the schema: ${describe(parsed.error.issues, ['services', i])}` };
        service = parsed.data;
      }
      next.set(key, service);
      services.push(service);
    }
    this.#validated = next;
    return { ok: true, snapshot: { ...envelope.data, services } };
  }
}
