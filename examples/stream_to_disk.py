"""Stream one (possibly huge) message to a file with bounded memory and a progress callback.

    python examples/stream_to_disk.py HOST PORT USER NUMBER OUTFILE   (password in $POP_PASSWORD)
"""

import os
import sys

import fastpoplib

host, port, user, number, outfile = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]


def progress(done: int, total: int) -> None:
    print(f"\r{done}/{total} bytes", end="", file=sys.stderr)  # or a tqdm bar: bar.update(done - bar.n)


with fastpoplib.POP3(host, port, timeout=30) as pop:
    pop.user(user)
    pop.pass_(os.environ["POP_PASSWORD"])
    written = pop.retr_to(number, outfile, progress=progress)
    print(f"\nwrote {written} bytes to {outfile}")
