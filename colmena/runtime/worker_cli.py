"""What `colmena worker` becomes: Dramatiq's CLI, its worker processes running the loop worker.

Dramatiq's CLI keeps what it does well: forking the processes, turning SIGTERM into a graceful
stop (and a second one into an exit), shutting the pool down when a process dies, serving the
Prometheus endpoint from a fork of its own. Each process builds its workers from the module
global `dramatiq.cli.Worker`, with no option to choose another class, so `main` points that
name at `LoopWorker` before the CLI starts; the processes are forked and inherit it
(tests/test_loop_worker.py starts `colmena worker` and waits for the loop worker's first line,
so a Dramatiq that stopped reading that name fails it).

    python -m colmena.runtime.worker_cli colmena.actors.boot --processes 2 --threads 8 ...

`sys.argv` is rewritten to this very command line so that a SIGHUP, on which Dramatiq's CLI
re-executes `sys.argv`, starts this module again rather than Dramatiq's own worker.
"""

from __future__ import annotations

import sys

import dramatiq.cli

from colmena.runtime.loop_worker import LoopWorker

MODULE = "colmena.runtime.worker_cli"


def main(argv: list[str]) -> int:
    dramatiq.cli.Worker = LoopWorker  # type: ignore[misc,assignment]
    sys.argv = [sys.executable, "-m", MODULE, *argv]
    return int(dramatiq.cli.main(dramatiq.cli.make_argument_parser().parse_args(argv)) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
