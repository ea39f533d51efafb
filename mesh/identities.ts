import { formatSpiffeId } from './spiffe-id.js';

/** The namespace Causeway's own components run in; their identities live there. */
export const SYSTEM_NAMESPACE = 'causeway-system';

/** Service accounts of Causeway's components (their SPIFFE IDs are `spiffe://<td>/ns/causeway-system/sa/<name>`). */
export const SystemAccounts = { controller: 'controller', gateway: 'gateway', federation: 'federation' } as const;

export function controllerIdentity(trustDomain: string): string {
  return formatSpiffeId({ trustDomain, namespace: SYSTEM_NAMESPACE, serviceAccount: SystemAccounts.controller });
}

export function gatewayIdentity(trustDomain: string): string {
  return formatSpiffeId({ trustDomain, namespace: SYSTEM_NAMESPACE, serviceAccount: SystemAccounts.gateway });
}

export function federationIdentity(trustDomain: string): string {
  return formatSpiffeId({ trustDomain, namespace: SYSTEM_NAMESPACE, serviceAccount: SystemAccounts.federation });
}
