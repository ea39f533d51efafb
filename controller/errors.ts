import { ControllerError, ControllerErrorCodes } from '../api-client/index.js';

export { ControllerError, ControllerErrorCodes };

/**
 * etcd could not be reached or refused the operation; retryable. `message` names the
 * endpoints and what to check (store/README.md "Calls and errors"); `cause` is etcd3's error.
 */
export class EtcdUnavailableError extends ControllerError {
  constructor(message: string, cause: unknown) {
    super(ControllerErrorCodes.etcdUnavailable, message, { cause, retryable: true });
  }
}
