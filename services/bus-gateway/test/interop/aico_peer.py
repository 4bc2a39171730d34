#!/usr/bin/python3
"""An AICO peer in Python, built the way AICO's backend is (pyzmq + protobuf), for the interop test.

Acts as AICO's message broker (XSUB on the publishers' port, XPUB on the subscribers' port, CURVE server
with AICO's default key pair) and as an AICO frontend that sends `update.check.request` with an
`UpdateCheckRequest` and waits for the `UpdateCheckResponse`. The message classes come from the
descriptor set built from our .proto files (Debian's python3-protobuf has no protoc).

Prints one JSON line per event: {"event": "broker_ready"} then {"event": "answer", ...}; exits 0 when
answered, 1 on timeout.
"""
import argparse
import json
import sys
import threading
import time
import uuid

import zmq
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

BROKER_PUBLIC = b"Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
BROKER_SECRET = b"D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs"


def message_classes(descriptor_set_path):
    files = descriptor_pb2.FileDescriptorSet()
    with open(descriptor_set_path, "rb") as f:
        files.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for proto in files.file:
        pool.Add(proto)
    factory = message_factory.MessageFactory(pool)

    def cls(name):
        descriptor = pool.FindMessageTypeByName(name)
        if hasattr(message_factory, "GetMessageClass"):
            return message_factory.GetMessageClass(descriptor)
        return factory.GetPrototype(descriptor)

    return cls


def run_broker(context, pub_port, sub_port):
    frontend = context.socket(zmq.XSUB)
    backend = context.socket(zmq.XPUB)
    for socket in (frontend, backend):
        socket.curve_server = True
        socket.curve_secretkey = BROKER_SECRET
        socket.curve_publickey = BROKER_PUBLIC
        socket.linger = 0
    frontend.bind(f"tcp://127.0.0.1:{pub_port}")
    backend.bind(f"tcp://127.0.0.1:{sub_port}")
    thread = threading.Thread(target=zmq.proxy, args=(frontend, backend), daemon=True)
    thread.start()


def client_socket(context, kind, port):
    socket = context.socket(kind)
    public, secret = zmq.curve_keypair()
    socket.curve_serverkey = BROKER_PUBLIC
    socket.curve_publickey = public
    socket.curve_secretkey = secret
    socket.linger = 0
    socket.connect(f"tcp://127.0.0.1:{port}")
    return socket


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--descriptors", required=True)
    parser.add_argument("--pub-port", type=int, required=True)
    parser.add_argument("--sub-port", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--stay", type=float, default=0, help="seconds the broker keeps running after the answer")
    args = parser.parse_args()

    cls = message_classes(args.descriptors)
    AicoMessage = cls("aico.core.AicoMessage")
    UpdateCheckRequest = cls("aico.core.UpdateCheckRequest")
    UpdateCheckResponse = cls("aico.core.UpdateCheckResponse")

    context = zmq.Context()
    run_broker(context, args.pub_port, args.sub_port)
    print(json.dumps({"event": "broker_ready"}), flush=True)

    pub = client_socket(context, zmq.PUB, args.pub_port)
    sub = client_socket(context, zmq.SUB, args.sub_port)
    sub.setsockopt(zmq.SUBSCRIBE, b"update/check/response")
    correlation_id = str(uuid.uuid4())

    def request_bytes():
        request = UpdateCheckRequest()
        request.component_type = 1  # COMPONENT_BACKEND
        request.device_id = "python-frontend"
        request.current_version.version = "1.0.0"
        envelope = AicoMessage()
        envelope.metadata.message_id = str(uuid.uuid4())
        now = time.time()
        envelope.metadata.timestamp.seconds = int(now)
        envelope.metadata.timestamp.nanos = int((now % 1) * 1e9)
        envelope.metadata.source = "python-frontend"
        envelope.metadata.message_type = "update/check/request/v1"
        envelope.metadata.version = "1.0"
        envelope.metadata.attributes["correlation_id"] = correlation_id
        envelope.metadata.attributes["reply_to"] = "update/check/response/v1"
        envelope.any_payload.type_url = "type.googleapis.com/aico.core.UpdateCheckRequest"
        envelope.any_payload.value = request.SerializeToString()
        return envelope.SerializeToString()

    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    deadline = time.time() + args.timeout
    next_send = 0.0
    while time.time() < deadline:
        # ZeroMQ drops what is published before the subscriptions arrive: ask again until answered.
        if time.time() >= next_send:
            pub.send_multipart([b"update/check/request/v1", request_bytes()])
            next_send = time.time() + 1.0
        if not poller.poll(100):
            continue
        frames = sub.recv_multipart()
        if len(frames) != 2:
            continue
        envelope = AicoMessage()
        envelope.ParseFromString(frames[1])
        if envelope.metadata.attributes.get("correlation_id") != correlation_id:
            continue
        if envelope.any_payload.type_url != "type.googleapis.com/aico.core.UpdateCheckResponse":
            print(json.dumps({"event": "error", "type_url": envelope.any_payload.type_url}), flush=True)
            return 1
        response = UpdateCheckResponse()
        response.ParseFromString(envelope.any_payload.value)
        print(json.dumps({
            "event": "answer",
            "topic": frames[0].decode(),
            "source": envelope.metadata.source,
            "message_type": envelope.metadata.message_type,
            "update_available": response.update_available,
            "latest_version": response.latest_version.version,
            "update_id": response.update_info.update_id,
        }), flush=True)
        time.sleep(args.stay)
        return 0
    print(json.dumps({"event": "timeout"}), flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
