import { EventEmitter } from 'node:events';

/** An EventEmitter with typed events (after microsoft/etcd3's overloads), shared by the controller and its node-side client (api-client/). */
export class TypedEmitter<Events extends Record<string, unknown[]>> extends EventEmitter {
  override on<E extends keyof Events & string>(event: E, listener: (...args: Events[E]) => void): this {
    return super.on(event, listener as (...args: unknown[]) => void);
  }
  override once<E extends keyof Events & string>(event: E, listener: (...args: Events[E]) => void): this {
    return super.once(event, listener as (...args: unknown[]) => void);
  }
  override off<E extends keyof Events & string>(event: E, listener: (...args: Events[E]) => void): this {
    return super.off(event, listener as (...args: unknown[]) => void);
  }
  override emit<E extends keyof Events & string>(event: E, ...args: Events[E]): boolean {
    return super.emit(event, ...args);
  }
}
