/**
 * An in-memory fake for unit tests that implements exactly what `target` has: reading any other property
 * throws, naming it, so a fake never silently accepts a call it does not know. `then` reads as absent
 * (a fake may be awaited or returned from an async function) and symbols pass through.
 */
export function strictFake<T extends object>(name: string, target: T): T {
  return new Proxy(target, {
    get(object, property, receiver) {
      if (property in object || typeof property === 'symbol' || property === 'then')
        return Reflect.get(object, property, receiver);
      throw new Error(`the fake ${name} does not implement ${String(property)}`);
    },
  });
}
