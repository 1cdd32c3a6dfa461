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

  readonly #interceptor: Interceptor = (options, nextCall) => {
    const call = nextCall(options);
    const done = (): void => {
      this.#live.delete(call);
    };
    // Delegates every method; only `start` is watched, to learn when the call ends.
    const tracked: Call = {
      start: (metadata, listener) => {
        if (this.#cancelled) {
          call.start(metadata, listener);
          call.cancelWithStatus(CLOSED_STATUS, CLOSED_DETAILS);
          return;
        }
        this.#live.add(call);
        call.start(metadata, onStatus(listener, done));
      },
      cancelWithStatus: (status, details) => call.cancelWithStatus(status, details),
      getPeer: () => call.getPeer(),
      sendMessageWithContext: (context, message) => call.sendMessageWithContext(context, message),
      sendMessage: (message) => call.sendMessage(message),
      startRead: () => call.startRead(),
      halfClose: () => call.halfClose(),
      getAuthContext: () => call.getAuthContext(),
    };
    // grpc-js types the result as its InterceptingCall class but only uses the interface.
    return tracked as unknown as ReturnType<Interceptor>;
  };

  /** Options for one request with a deadline `ms` from now (gRPC deadlines are wall-clock). */
  request(ms: number): CallOptions {
    return { deadline: Date.now() + ms, interceptors: [this.#interceptor] };
  }

  /** Options for a stream (no deadline). */
  stream(): CallOptions {
    return { interceptors: [this.#interceptor] };
  }

  /** Ends every call in flight, and every call started from now on, with a plain failure. */
  cancelAll(): void {
    this.#cancelled = true;
    for (const call of [...this.#live]) {
      this.#live.delete(call);
      call.cancelWithStatus(CLOSED_STATUS, CLOSED_DETAILS);
    }
  }
}

/** `listener` with `done` called first when the call's status arrives. */
function onStatus(listener: Listener, done: () => void): Listener {
  const watched: NonNullable<Listener> = Object.create(listener ?? null);
  watched.onReceiveStatus = (status) => {
    done();
    listener?.onReceiveStatus?.(status);
  };
  return watched;
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
