// Moved to mesh/ (the node-side client in api-client/ uses it too); kept for the modules here that still import it from this path.
export { TypedEmitter } from '../mesh/typed-emitter.js';
