"""Start localstripe's real aiohttp app, isolated and bound to 127.0.0.1 only.

Run as ``python -m tests.support.localstripe_launcher --port-file PATH [--port N]
[--from-scratch] [--store-path PATH]`` (``tests.support.localstripe.run_localstripe``
does this for you).

Why a launcher instead of ``python -m localstripe``:

* ``localstripe.server.start()`` binds ``('::', port)``: every interface, IPv4 and IPv6.
  We must listen on 127.0.0.1 only, so we bind the socket ourselves and hand it to
  ``aiohttp.web.run_app`` together with localstripe's own ``app`` object.
* localstripe's ``Store`` pickles the *whole* store to the hard-coded file
  ``/tmp/localstripe.pickle`` on every ``store[...] = ...``, every ``del store[...]`` and
  after every POST/PUT/DELETE request.  That file is shared by every instance on the
  machine, so parallel test runs overwrite each other's data, and it makes every write
  O(size of store).  We replace ``Store.dump_to_disk`` / ``Store.try_load_from_disk``
  *before* serving: by default they become no-ops (pure in-memory store, the fastest and
  fully isolated choice); with ``--store-path`` they read/write that private file instead
  (useful only to inspect a run's data afterwards).
* Binding port 0 here and writing the chosen port to ``--port-file`` avoids the
  "pick a free port, close it, hope nobody grabs it" race.
* With ``--parent-pid`` the server SIGTERMs itself when that process goes away, so a
  test run killed with SIGKILL does not leave localstripe servers behind.

Everything else (routes, resources, webhook sending) is localstripe's unmodified code.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import signal
import socket
import sys
import threading
import time


def _patch_store(store_path: str | None) -> None:
    from localstripe.resources import Store

    if store_path is None:

        def dump_to_disk(self: Store) -> None:  # no persistence at all
            return None

        def try_load_from_disk(self: Store) -> None:
            return None

    else:

        def dump_to_disk(self: Store) -> None:
            tmp = f"{store_path}.tmp"
            with open(tmp, "wb") as f:
                pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, store_path)

        def try_load_from_disk(self: Store) -> None:
            try:
                with open(store_path, "rb") as f:
                    old = pickle.load(f)
            except FileNotFoundError:
                return
            dict.clear(self)
            dict.update(self, old)

    Store.dump_to_disk = dump_to_disk
    Store.try_load_from_disk = try_load_from_disk


def _exit_with_parent(parent_pid: int) -> None:
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)  # aiohttp's run_app shuts down cleanly

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument("--port-file", required=True, help="where to write the bound port")
    parser.add_argument("--from-scratch", action="store_true", help="do not load --store-path")
    parser.add_argument("--store-path", default=None, help="private pickle file (default: none)")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when it exits")
    args = parser.parse_args(argv)

    if args.parent_pid is not None:
        _exit_with_parent(args.parent_pid)

    _patch_store(args.store_path)

    from aiohttp import web
    from localstripe.resources import store
    from localstripe.server import app

    if not args.from_scratch:
        store.try_load_from_disk()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    port = sock.getsockname()[1]

    tmp = f"{args.port_file}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, args.port_file)

    # Same logging as localstripe.server.start(): access log plus the
    # 'webhook "..." successfully delivered / failed' lines, on stderr.
    logger = logging.getLogger("aiohttp.access")
    logger.setLevel(logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)

    web.run_app(app, sock=sock, access_log=logger, print=None)


if __name__ == "__main__":
    main()
