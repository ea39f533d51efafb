import type { ServicePort } from '../mesh/index.js';

/**
 * Namespace sameness (docs/architecture.md "Federation rules"): `<name>.<namespace>` exported by
 * several clusters is one mesh service. Its ports must agree; where they do not, the
 * oldest export (by `exportedAt`, then cluster name) wins and every export whose ports
 * differ from the winner's is in conflict — the Kubernetes MCS rule.
 */
export interface PortConflict {
  /** `<name>.<namespace>` */
  readonly service: string;
  readonly winner: string;
  readonly winnerExportedAt: string;
  /** Clusters whose ports differ from the winner's. */
  readonly losers: readonly string[];
}

interface Claim {
  readonly ports: string;
  readonly exportedAt: string;
  readonly exportedAtMs: number;
}

/** Ports compared by name, number and protocol; targetPort is the exporting cluster's own business. */
export function portsSignature(ports: readonly ServicePort[]): string {
  return ports
    .map((p) => `${p.name}/${p.port}/${p.protocol}`)
    .sort()
    .join(',');
}

export class PortConflictBoard {
  readonly #claims = new Map<string, Map<string, Claim>>();
  /** cluster → services where its export loses (kept in step by claim(), so reads are cheap). */
  readonly #losing = new Map<string, Set<string>>();

  /**
   * Records `cluster`'s export of `service` (or its removal with `ports` undefined) and
   * returns the clusters whose conflict text for that service changed.
   */
  claim(cluster: string, service: string, value: { ports: readonly ServicePort[]; exportedAt: string } | undefined): string[] {
    const before = this.#conflictsOf(service);
    let claims = this.#claims.get(service);
    if (value) {
      if (!claims) this.#claims.set(service, (claims = new Map()));
      claims.set(cluster, { ports: portsSignature(value.ports), exportedAt: value.exportedAt, exportedAtMs: Date.parse(value.exportedAt) });
    } else if (claims) {
      claims.delete(cluster);
      if (claims.size === 0) this.#claims.delete(service);
    }
    const after = this.#conflictsOf(service);
    const changed = new Set<string>();
    for (const c of new Set([...before.keys(), ...after.keys()])) {
      if (before.get(c) === after.get(c)) continue;
      changed.add(c);
      let losing = this.#losing.get(c);
      if (!losing) this.#losing.set(c, (losing = new Set()));
      if (after.has(c)) losing.add(service);
      else losing.delete(service);
    }
    return [...changed];
  }

  /** Why `cluster`'s export of `service` is in conflict, or undefined. */
  conflictFor(cluster: string, service: string): string | undefined {
    return this.#conflictsOf(service).get(cluster);
  }

  /** Services (`<name>.<namespace>`) where `cluster`'s export loses. */
  losingServices(cluster: string): string[] {
    return [...(this.#losing.get(cluster) ?? [])].sort();
  }

  /** Every service with a conflict. */
  conflicts(): PortConflict[] {
    const out: PortConflict[] = [];
    const involved = new Set<string>();
    for (const services of this.#losing.values()) for (const s of services) involved.add(s);
    for (const service of involved) {
      const winner = this.#winner(service);
      if (!winner) continue;
      const losers = [...this.#conflictsOf(service).keys()].sort();
      if (losers.length > 0) out.push({ service, winner: winner[0], winnerExportedAt: winner[1].exportedAt, losers });
    }
    return out.sort((a, b) => a.service.localeCompare(b.service));
  }

  #winner(service: string): [string, Claim] | undefined {
    let best: [string, Claim] | undefined;
    for (const entry of this.#claims.get(service) ?? []) {
      if (!best || entry[1].exportedAtMs < best[1].exportedAtMs || (entry[1].exportedAtMs === best[1].exportedAtMs && entry[0] < best[0])) best = entry;
    }
    return best;
  }

  #conflictsOf(service: string): Map<string, string> {
    const out = new Map<string, string>();
    const winner = this.#winner(service);
    if (!winner) return out;
    for (const [cluster, claim] of this.#claims.get(service) ?? []) {
      if (claim.ports !== winner[1].ports) {
        out.set(cluster, `ports [${claim.ports}] differ from cluster ${winner[0]}'s older export [${winner[1].ports}] (exported ${winner[1].exportedAt}); the oldest export wins`);
      }
    }
    return out;
  }
}
