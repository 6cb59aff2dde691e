"""XML signature cost: verifying an inbound message and signing the reply, and signed polls.

1. Crypto per message: for RSA-2048 and P-256 (the VEN and the VTN with keys of one kind), the
   VTN's CPU to verify a signed oadrPoll (hardened parse, profile checks, two reference digests,
   the signature value) plus to sign its oadrResponse (C14N, digests, signature, serialization).
   The VEN's messages are signed beforehand, each with its own nonce; only the VTN's side is timed.
2. Signed vs unsigned polls, in process: the whole pipeline (the WSGI application called as a
   server calls it, SQLite store), a registered VEN polling with nothing pending, once unsigned
   and once registered with oadrXmlSignature=true (verify, replay check with its nonce written
   to the store, signed reply). CPU per poll of this process.
3. Signed vs unsigned polls over HTTP: gunicorn with one sync worker serves bench/poll_app.py
   (SQLite store), as in bench_poll_sweep.py; 50 unsigned and 50 signing VENs registered, four
   client threads poll for a fixed time with bodies signed beforehand. Polls per second and the
   worker's own CPU per poll.

    python bench/bench_signature.py
    python bench/bench_signature.py --seconds 5 --runs 3
    python bench/bench_signature.py --profile rsa     # where a signed poll's CPU goes

Targets (issue 7): verify + sign at most 3 ms of VTN CPU per message; signed polls at least 50 %
of the unsigned throughput.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # this checkout's flask_openadr, and tests.support
sys.path.insert(0, HERE)

from flask import Flask  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

from flask_openadr import VTN, codec  # noqa: E402
from flask_openadr.codec.convert import encode_element  # noqa: E402
from flask_openadr.security.signature import load_signer, sign, verify  # noqa: E402
from flask_openadr.testing import VENTestClient  # noqa: E402
from tests.support.certs import make_identity  # noqa: E402

PREFIX = "/OpenADR2/Simple/2.0b"


def now() -> datetime:
    return datetime.now(timezone.utc)


def crypto_per_message(kind: str, seconds: float) -> tuple[int, float]:
    """(messages, VTN CPU seconds) for verify + sign of one poll and its reply."""
    ven = load_signer(*make_identity(kind, "ven"))
    vtn = load_signer(*make_identity(kind, "vtn"))
    bodies = [sign(encode_element("oadrPoll", {"ven_id": "ven-1"}), ven, now=now())
              for _ in range(200)]
    reply = {"response": {"response_code": 200, "response_description": "OK",
                          "request_id": ""}, "ven_id": "ven-1"}
    count, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - wall0 < seconds:
        for body in bodies:
            verified = verify(codec.parse(body))
            codec.decode_element(verified.payload)
            sign(encode_element("oadrResponse", reply), vtn, now=now())
        count += len(bodies)
    return count, time.process_time() - cpu0


def poll_app(tmp: str, kind: str, signed: bool):
    """A VTN on SQLite and a registered VEN; returns (wsgi app, VEN client)."""
    vtn_cert, vtn_key = make_identity(kind, "vtn")
    app = Flask(f"bench_{kind}_{signed}", instance_path=tmp)
    app.config.update(OPENADR_STORE_URI=f"sqlite:///{tmp}/{kind}-{signed}.sqlite3",
                      OPENADR_BACKGROUND="off", OPENADR_SIGNING_CERT=vtn_cert,
                      OPENADR_SIGNING_KEY=vtn_key)
    VTN(app)
    cert, key = make_identity(kind, "ven")
    options = {"signing_cert": cert, "signing_key": key} if signed else {}
    ven = VENTestClient(app.test_client(), environ={"SSL_CLIENT_CERT": cert}, **options)
    ven.register(xml_signature=signed)
    _, metadata = ven.poll()  # the VTN's METADATA report, acknowledged: later polls find
    ven.registered_report(metadata)  # nothing pending (nor anything to send again)
    return app, ven


def polls(app, ven, seconds: float, profiler=None) -> tuple[int, float]:
    """(polls, CPU seconds), the WSGI app called directly with pre-encoded (pre-signed) bodies.

    :param profiler: a ``cProfile.Profile`` to run while polling (not while signing the bodies).
    """
    base = EnvironBuilder(path=f"{PREFIX}/OadrPoll", method="POST", data=b"x",
                          content_type="application/xml",
                          environ_base=ven.environ).get_environ()
    bodies = [ven.encode("oadrPoll", {"ven_id": ven.ven_id}) for _ in range(2000)]

    def start_response(status, headers, exc_info=None):
        if not status.startswith("200"):
            raise SystemExit(f"unexpected status {status}")

    if profiler is not None:
        profiler.enable()
    count, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
    for body in bodies:
        environ = dict(base, **{"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))})
        reply = b"".join(app(environ, start_response))
        if b"<ei:responseCode>200<" not in reply:
            raise SystemExit(f"unexpected reply: {reply[:400]!r}")
        count += 1
        if time.perf_counter() - wall0 >= seconds:
            break
    cpu = time.process_time() - cpu0
    if profiler is not None:
        profiler.disable()
    return count, cpu


def profile(kind: str, seconds: float, top: int) -> None:
    """cProfile of signed polls in process (as in :func:`polls`): the functions with the most
    time of their own, and with the most time including what they call."""
    import cProfile
    import pstats

    with tempfile.TemporaryDirectory() as tmp:
        app, ven = poll_app(tmp, kind, True)
        profiler = cProfile.Profile()
        count, _cpu = polls(app, ven, seconds, profiler)
    print(f"{count} signed polls, {kind}; times are per poll")
    stats = pstats.Stats(profiler)
    for key, title in (("tottime", "own time"), ("cumtime", "including callees")):
        print(f"  by {title}:")
        rows = sorted(stats.stats.items(), key=lambda item: item[1][2 if key == "tottime" else 3],
                      reverse=True)[:top]
        for (path, line, name), (_cc, calls, own, total, _callers) in rows:
            where = f"{os.path.basename(path)}:{line}" if line else path
            print(f"    {own * 1e6 / count:7.1f} us own {total * 1e6 / count:7.1f} us total "
                  f"{calls / count:5.1f} calls  {name} ({where})")


def http_polls(kind: str, seconds: float, threads: int, vens: int = 50) -> dict:
    """Unsigned and signed polls through gunicorn (one sync worker): polls/s and worker CPU."""
    import json
    import threading

    from bench_poll_sweep import request, run_load, serve_poll_app

    with tempfile.TemporaryDirectory() as tmp:
        vtn_cert, vtn_key = make_identity(kind, "vtn")
        for name, text in (("vtn.pem", vtn_cert), ("vtn.key", vtn_key)):
            with open(os.path.join(tmp, name), "w") as fh:
                fh.write(text)
        # The bodies are signed before the load starts, which takes a minute or more on a busy
        # machine: a replay window of 15 minutes keeps the first ones fresh. The window costs
        # nothing per message (the nonce is written either way).
        with serve_poll_app(f"sqlite:///{tmp}/vtn.sqlite3", tmp,
                            BENCH_SIGNING_CERT=os.path.join(tmp, "vtn.pem"),
                            BENCH_SIGNING_KEY=os.path.join(tmp, "vtn.key"),
                            BENCH_CONFIG=json.dumps({"OPENADR_REPLAY_WINDOW": 900})) as port:
            path = PREFIX + "/OadrPoll"
            unsigned_ids = json.loads(request(port, "POST", f"/bench/setup?n={vens}"))["ven_ids"]
            unsigned = [codec.encode("oadrPoll", {"ven_id": v}) for v in unsigned_ids]
            signers = []
            for i in range(vens):  # each signing VEN is known by its certificate
                signer = load_signer(*make_identity(kind, f"ven-{i}"))
                reply = request(port, "POST", PREFIX + "/EiRegisterParty", sign(encode_element(
                    "oadrCreatePartyRegistration", {
                        "request_id": f"r-{i}", "profile_name": "2.0b",
                        "transport_name": "simpleHttp", "report_only": False,
                        "xml_signature": True, "ven_name": f"signed-{i}",
                        "http_pull_model": True}), signer, now=now()))
                ven_id = codec.decode_element(verify(codec.parse(reply)).payload)[1]["ven_id"]
                # The VTN's METADATA report, acknowledged: later polls find nothing pending
                # (nor anything to send again).
                metadata = codec.decode_element(verify(codec.parse(request(
                    port, "POST", path, sign(encode_element("oadrPoll", {"ven_id": ven_id}),
                                             signer, now=now())))).payload)[1]
                request(port, "POST", PREFIX + "/EiReport", sign(encode_element(
                    "oadrRegisteredReport", {
                        "response": {"response_code": 200, "response_description": "OK",
                                     "request_id": metadata["request_id"]},
                        "report_requests": [], "ven_id": ven_id}), signer, now=now()))
                signers.append((signer, ven_id))
            results = {}
            for label in ("unsigned", "signed"):
                if label == "signed":
                    # Signed beforehand (the VENs' work, not the VTN's), one nonce each.
                    total = int(seconds * 2000)
                    bodies = [sign(encode_element("oadrPoll", {"ven_id": ven_id}), signer,
                                   now=now())
                              for signer, ven_id in (signers[i % vens] for i in range(total))]
                else:
                    bodies = [unsigned[i % vens] for i in range(int(seconds * 4000))]
                feed = iter(bodies)
                lock = threading.Lock()
                failures: list[str] = []

                def send(slot: int) -> None:
                    with lock:
                        body = next(feed, None)
                    if body is None:
                        failures.append("ran out of pre-signed bodies; lower --seconds")
                    else:
                        reply = request(port, "POST", path, body)
                        if b"<ei:responseCode>200<" not in reply:
                            failures.append(f"unexpected reply: {reply[-600:]!r}")
                    if failures:
                        raise SystemExit  # ends this client thread; reported below

                sent, wall, cpu = run_load(port, threads, seconds, send)
                if failures:
                    raise SystemExit(f"{label} polls over HTTP: {failures[0]}")
                results[label] = (sent / wall, cpu * 1000 / sent)
            return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3, help="report the best of this many")
    parser.add_argument("--threads", type=int, default=4, help="HTTP client threads")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--profile", choices=("rsa", "ec"),
                        help="only profile signed polls in process with keys of this kind")
    parser.add_argument("--top", type=int, default=25, help="functions shown by --profile")
    args = parser.parse_args()
    if args.profile:
        profile(args.profile, args.seconds, args.top)
        return
    print("verify + sign, VTN CPU per message (best of runs)")
    for kind, label in (("rsa", "RSA-2048"), ("ec", "P-256")):
        best = min(cpu / count for count, cpu in
                   (crypto_per_message(kind, args.seconds) for _ in range(args.runs)))
        print(f"  {label:9} {best * 1000:6.3f} ms")
    print("polls through the pipeline, SQLite store (best of runs)")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, label in (("rsa", "RSA-2048"), ("ec", "P-256")):
            rates = {}
            for signed in (False, True):
                app, ven = poll_app(tmp, kind, signed)
                best = min(cpu / count for count, cpu in
                           (polls(app, ven, args.seconds) for _ in range(args.runs)))
                rates[signed] = 1 / best
                print(f"  {label:9} {'signed' if signed else 'unsigned':8} "
                      f"{best * 1000:6.3f} ms CPU/poll  {1 / best:7.0f} polls/s per core")
            print(f"  {label:9} signed/unsigned: {rates[True] / rates[False]:.0%}")
    if args.skip_http:
        return
    print("polls over HTTP, gunicorn with one sync worker, SQLite store")
    for kind, label in (("rsa", "RSA-2048"), ("ec", "P-256")):
        results = http_polls(kind, args.seconds, args.threads)
        for mode, (rate, cpu_ms) in results.items():
            print(f"  {label:9} {mode:8} {rate:7.0f} polls/s  {cpu_ms:6.3f} ms worker CPU/poll")
        print(f"  {label:9} signed/unsigned throughput: "
              f"{results['signed'][0] / results['unsigned'][0]:.0%}")


if __name__ == "__main__":
    main()
