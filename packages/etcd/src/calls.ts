import type { IDuplexStream, LeaseClient } from "etcd3";

/** gRPC call options (a deadline, interceptors) as etcd3's RPC clients take them. */
export type CallOptions = NonNullable<Parameters<LeaseClient["leaseGrant"]>[1]>;

type Interceptor = NonNullable<CallOptions["interceptors"]>[number];
/** What an interceptor gets from the next one in the chain: a gRPC call it can cancel. */
type Call = ReturnType<Parameters<Interceptor>[1]>;
type Listener = Parameters<Call["start"]>[1];

/**
 * gRPC's FAILED_PRECONDITION. etcd3 retries a call that ends with CANCELLED
 * (and resets every connection to the member, a given client's included);
 * it takes this code for a plain failure.
 */
const CLOSED_STATUS = 9;
const CLOSED_DETAILS = "the etcd backend was closed";

/**
 * Every gRPC call the backend makes (requests, keepalive and watch streams)
 * goes through this interceptor, so that close() can end the ones still
 * waiting for a server that stopped answering: closing an etcd3 client
 * leaves its calls in flight until their deadlines, each holding its socket
 * and a timer, and a stream has no deadline at all.
 */
export class Calls {
  readonly #live = new Set<Call>();
  #cancelled = false;

  readonly #interceptor: Interceptor = (options, nextCall) =>
    // grpc-js types the result as its InterceptingCall class but only uses the interface.
    new TrackedCall(nextCall(options), this) as unknown as ReturnType<Interceptor>;
  /** One array for every call's options: they run twice per uncontended lock cycle. */
  readonly #interceptors = [this.#interceptor];

  /** Options for one request with a deadline `ms` from now (gRPC deadlines are wall-clock). */
  request(ms: number): CallOptions {
    return { deadline: Date.now() + ms, interceptors: this.#interceptors };
  }

  /** Options for a stream (no deadline). */
  stream(): CallOptions {
    return { interceptors: this.#interceptors };
  }

  /** Ends every call in flight, and every call started from now on, with a plain failure. */
  cancelAll(): void {
    this.#cancelled = true;
    for (const call of [...this.#live]) {
      this.#live.delete(call);
      call.cancelWithStatus(CLOSED_STATUS, CLOSED_DETAILS);
    }
  }

  /** A call starts: tracked until its status arrives (false: cancel it, close() has run). */
  started(call: Call): boolean {
    if (this.#cancelled) return false;
    this.#live.add(call);
    return true;
  }

  ended(call: Call): void {
    this.#live.delete(call);
  }
}

/**
 * A gRPC call that tells {@link Calls} when it starts and ends, delegating
 * everything else. A class, not closures per call: every request makes one.
 */
class TrackedCall {
  readonly #call: Call;
  readonly #calls: Calls;

  constructor(call: Call, calls: Calls) {
    this.#call = call;
    this.#calls = calls;
  }

  start(metadata: Parameters<Call["start"]>[0], listener: Listener): void {
    const call = this.#call;
    if (!this.#calls.started(call)) {
      call.start(metadata, listener);
      call.cancelWithStatus(CLOSED_STATUS, CLOSED_DETAILS);
      return;
    }
    call.start(metadata, new TrackedListener(listener, this.#calls, call));
  }

  cancelWithStatus(...args: Parameters<Call["cancelWithStatus"]>): void {
    this.#call.cancelWithStatus(...args);
  }

  getPeer(): string {
    return this.#call.getPeer();
  }

  sendMessageWithContext(...args: Parameters<Call["sendMessageWithContext"]>): void {
    this.#call.sendMessageWithContext(...args);
  }

  sendMessage(message: unknown): void {
    this.#call.sendMessage(message);
  }

  startRead(): void {
    this.#call.startRead();
  }

  halfClose(): void {
    this.#call.halfClose();
  }

  getAuthContext(): ReturnType<Call["getAuthContext"]> {
    return this.#call.getAuthContext();
  }
}

type Status = Parameters<NonNullable<NonNullable<Listener>["onReceiveStatus"]>>[0];

/** The listener of a {@link TrackedCall}: its status ends the tracking, then goes on. */
class TrackedListener {
  readonly #listener: Listener;
  readonly #calls: Calls;
  readonly #call: Call;

  constructor(listener: Listener, calls: Calls, call: Call) {
    this.#listener = listener;
    this.#calls = calls;
    this.#call = call;
  }

  onReceiveMetadata(metadata: Parameters<Call["start"]>[0]): void {
    this.#listener?.onReceiveMetadata?.(metadata);
  }

  onReceiveMessage(message: unknown): void {
    this.#listener?.onReceiveMessage?.(message);
  }

  onReceiveStatus(status: Status): void {
    this.#calls.ended(this.#call);
    this.#listener?.onReceiveStatus?.(status);
  }
}

/**
 * Ends a stream of the backend's own. etcd ends a keepalive stream once the
 * client half-closes it, but a watch stream only once it is cancelled (its
 * watchers live on after a half-close). Half-closed first, a cancelled
 * stream is not taken by etcd3 for a failure of the member (which would
 * reset every connection to it).
 */
export function endStream(stream: IDuplexStream<unknown, unknown>, cancel = false): void {
  try {
    stream.end();
    if (cancel) stream.cancel();
  } catch {
    // already closed
  }
}
