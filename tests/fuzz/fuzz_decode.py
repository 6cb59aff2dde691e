"""A coverage-guided fuzz target (atheris) for the decoder: any bytes through codec.decode.

Not a pytest test (the file name does not start with ``test_``); see README.md beside it. Each
input must end, within a second, in one of three ways: a decoded payload that the codec encodes
again and decodes to the same dict, a MalformedMessage with a short reason, or an
UnsupportedValue carrying the payload it refused. Anything else (an exception of another type,
a slow input) is a crash that atheris reports with the input that caused it.
"""
from __future__ import annotations

import os
import sys
import time

import atheris

with atheris.instrument_imports(include=["flask_openadr"]):
    from flask_openadr import codec
    from flask_openadr.errors import MalformedMessage, UnsupportedValue

#: The VTN's default OPENADR_MAX_MESSAGE_BYTES.
MAX_BYTES = 1024 * 1024
#: A reason names the element path and the expected values, so it may pass the 200 characters
#: the view keeps; what it must not do is grow with the input (echo a value whole).
MAX_REASON = 1000
MAX_SECONDS = 1.0


def test_one_input(data: bytes) -> None:
    started = time.perf_counter()
    try:
        name, payload = codec.decode(data, max_bytes=MAX_BYTES)
    except MalformedMessage as error:
        if len(str(error)) > MAX_REASON:
            raise AssertionError(f"a {len(str(error))}-character reason: {str(error)[:200]}")
        return
    except UnsupportedValue as refusal:
        if refusal.payload_name not in codec.PAYLOADS:
            raise AssertionError(f"refused an unknown payload {refusal.payload_name!r}")
        return
    finally:
        elapsed = time.perf_counter() - started
        if elapsed > MAX_SECONDS:
            raise AssertionError(f"decoding took {elapsed:.2f} s")
    # What the VTN accepted, it can write again and read back unchanged.
    again = codec.decode(codec.encode(name, payload))
    if again != (name, payload):
        raise AssertionError(f"{name} does not survive encode/decode:\n{payload!r}\n{again!r}")


def write_seeds(directory: str, per_payload: int = 3) -> None:
    """Seed a corpus with valid messages of every payload type, from
    tests/support/strategies.py."""
    # The checkout root, where the tests package is (two levels up from tests/fuzz/).
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.dirname(os.path.dirname(here)))
    from tests.support.strategies import PAYLOAD_STRATEGIES

    os.makedirs(directory, exist_ok=True)
    for name, strategy in sorted(PAYLOAD_STRATEGIES.items()):
        for number in range(per_payload):
            body = codec.encode(name, strategy.example())
            with open(os.path.join(directory, f"{name}-{number}.xml"), "wb") as seed:
                seed.write(body)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--seeds":
        write_seeds(sys.argv[2])
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
