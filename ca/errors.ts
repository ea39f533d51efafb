import { CausewayError } from '../mesh/index.js';

/** Stable codes of every error the CA raises. */
export const CaErrorCodes = {
  keyTypeUnknown: 'CW_CA_KEY_TYPE_UNKNOWN',
  keyNotAllowed: 'CW_CA_KEY_NOT_ALLOWED',
  pemInvalid: 'CW_CA_PEM_INVALID',
  csrTooLarge: 'CW_CA_CSR_TOO_LARGE',
  csrMalformed: 'CW_CA_CSR_MALFORMED',
  csrSignatureInvalid: 'CW_CA_CSR_SIGNATURE_INVALID',
  identityInvalid: 'CW_CA_IDENTITY_INVALID',
  identityMismatch: 'CW_CA_IDENTITY_MISMATCH',
  ttlInvalid: 'CW_CA_TTL_INVALID',
  ttlAboveMaximum: 'CW_CA_TTL_ABOVE_MAXIMUM',
  unauthenticated: 'CW_CA_UNAUTHENTICATED',
  tokenMalformed: 'CW_CA_TOKEN_MALFORMED',
  tokenSignatureInvalid: 'CW_CA_TOKEN_SIGNATURE_INVALID',
  tokenExpired: 'CW_CA_TOKEN_EXPIRED',
  tokenAudienceMismatch: 'CW_CA_TOKEN_AUDIENCE_MISMATCH',
  tokenTtlInvalid: 'CW_CA_TOKEN_TTL_INVALID',
  peerCertificateInvalid: 'CW_CA_PEER_CERTIFICATE_INVALID',
  caFilesUnreadable: 'CW_CA_FILES_UNREADABLE',
  caInvalid: 'CW_CA_INVALID',
  certificateInvalid: 'CW_CA_CERTIFICATE_INVALID',
  fetchFailed: 'CW_CA_FETCH_FAILED',
  /** The signer failed on a request (not a refusal of the request); the cause is logged on the controller. */
  internal: 'CW_CA_INTERNAL',
} as const;
export type CaErrorCode = (typeof CaErrorCodes)[keyof typeof CaErrorCodes];

/** Any CA failure; `code` is one of {@link CaErrorCodes}. */
export class CaError extends CausewayError {
  declare readonly code: CaErrorCode;
  constructor(code: CaErrorCode, message: string, options: { cause?: unknown; retryable?: boolean } = {}) {
    super(code, message, options);
  }
}
