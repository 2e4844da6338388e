"""Subprocess for fuzz_litert.py: load and invoke models in LiteRT, one per request.

Protocol on stdin/stdout: the parent writes a 4-byte big-endian length and the model; the worker
answers one status byte: ``0`` loaded and invoked, ``1`` the runtime refused it with an error (a
clean refusal), ``2`` invoke failed with an error. If LiteRT crashes (SIGSEGV, SIGABRT, ...)
the worker dies and the parent sees end of file: that model is a validator bug.

Every input tensor is filled with zeros of its dtype; strings are not fed. Each model is loaded
with XNNPACK on (the default for small models), as an agent would.
"""

from __future__ import annotations

import struct
import sys


def main() -> None:
    import numpy as np

    from edgeward.core.errors import EdgewardError
    from edgeward.models.runtime import load_interpreter

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = inp.read(4)
        if len(head) < 4:
            return
        (n,) = struct.unpack(">I", head)
        model = inp.read(n)
        status = 0
        try:
            interp = load_interpreter(model)
            for d in interp.get_input_details():
                shape = [max(1, int(x)) for x in d["shape"]]
                if int(np.prod(shape)) <= 1 << 22:
                    interp.set_tensor(d["index"], np.zeros(shape, dtype=d["dtype"]))
            interp.invoke()
            for d in interp.get_output_details():
                interp.get_tensor(d["index"])
        except (EdgewardError, ValueError, RuntimeError, TypeError, MemoryError):
            status = 1
        out.write(bytes([status]))
        out.flush()


if __name__ == "__main__":
    main()
