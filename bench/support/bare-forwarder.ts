/*
 * The bus benchmark's baseline, in a process of its own as the gateway is: ZeroMQ in (CurveZMQ), one NATS
 * request with the bytes as they came, the reply's bytes back out on ZeroMQ. Nothing parsed or checked.
 * Arguments: <broker host> <pub port> <sub port> <nats url> <broker public key>
 */
import { SerialSender } from '@aico-update/bus-gateway';
import { connect } from '@nats-io/transport-node';
import { curveKeyPair, Publisher, Subscriber } from 'zeromq';

const [host, pubPort, subPort, natsUrl, serverKey] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
  string,
];
const keys = () => {
  const k = curveKeyPair();
  return { curveServerKey: serverKey, curvePublicKey: k.publicKey, curveSecretKey: k.secretKey };
};
const nc = await connect({ servers: natsUrl, noAsyncTraces: true }); // as the gateway connects
const input = new Subscriber({ linger: 0, ...keys() });
const output = new Publisher({ linger: 0, ...keys() });
input.connect(`tcp://${host}:${subPort}`);
output.connect(`tcp://${host}:${pubPort}`);
input.subscribe('bench.bare.request');
const sender = new SerialSender(output);
process.on('SIGTERM', () => process.exit(0));
console.log('ready');
for await (const [, data] of input) {
  void nc.request('bench.bare', data as Uint8Array, { timeout: 10_000 }).then((reply) => {
    void sender.send(['bench.bare.response', reply.data]).catch(() => undefined);
  });
}
