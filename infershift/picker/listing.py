"""A static `/v1/models` server: the gateway's model listing, out of a file (the stack's rendered
ConfigMap, components/models_listing.py), in OpenAI's list shape.

    python -m infershift.picker.listing --file /etc/models/listings.json --port 8080 [--host 0.0.0.0]

The file is a JSON object, listing key -> OpenAI list (`{"object": "list", "data": [...]}`); a
Gateway listener (and hostname) has its own key, which its HTTPRoute rule sets in the
`x-infershift-listing` request header (contract.LISTING_HEADER). Answers:

- GET / HEAD `/v1/models` (any query string): 200 with that listing; with no header and exactly one
  listing in the file, that one; an unknown key: 404.
- another method on `/v1/models`: 405 with `Allow: GET, HEAD`; any other path: 404.
- GET `/healthz`: 200 (the probes'), once the file has been read.

Every error body is OpenAI's error shape. The file is read again when it changes (a ConfigMap
volume is updated in place by the kubelet, by an atomic symlink swap); a change that is not a valid
listing file is logged and the last good one kept. Standard library only, so it runs from the
picker's image (non-root, read-only root filesystem: it writes nothing).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from infershift import contract

PATH = "/v1/models"
HEALTH_PATH = "/healthz"


class ListingFileError(ValueError):
    pass


def _error(message: str, kind: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


ALLOW = "GET, HEAD"
# the 405 answer, byte for byte what the local stack's gateway answers for its listing rules too
METHOD_NOT_ALLOWED = _error(f"{PATH} answers GET and HEAD only", "invalid_request_error", "method_not_allowed")


def parse(text: str, where: str) -> dict[str, dict]:
    """The listings of a file's text; ListingFileError naming what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ListingFileError(f"{where}: not JSON: {e}") from None
    if not isinstance(data, dict) or not data:
        raise ListingFileError(f"{where}: expected a JSON object of listing key -> model list")
    for key, listing in data.items():
        if not (isinstance(listing, dict) and listing.get("object") == "list"
                and isinstance(listing.get("data"), list)):
            raise ListingFileError(f'{where}: [{key!r}] is not an OpenAI model list ({{"object": "list", "data": [...]}})')
        for i, m in enumerate(listing["data"]):
            if not (isinstance(m, dict) and isinstance(m.get("id"), str) and m.get("object") == "model"):
                raise ListingFileError(f'{where}: [{key!r}].data[{i}] is not a model ({{"id": ..., "object": "model"}})')
    return data


class Listings:
    """The file's listings, read again when the file changes."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self.bodies: dict[str, bytes] = {}
        self._load(self._read_stamp())  # a bad file at start is fatal (the pod never gets ready)

    def _read_stamp(self) -> tuple:
        st = os.stat(self.path)  # follows the ConfigMap volume's ..data symlink
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self, stamp: tuple) -> None:
        with open(self.path, encoding="utf-8") as f:
            listings = parse(f.read(), self.path)
        self.bodies = {k: json.dumps(v).encode() for k, v in listings.items()}
        self._stamp = stamp

    def current(self) -> dict[str, bytes]:
        with self._lock:
            try:
                stamp = self._read_stamp()
                if stamp != self._stamp:
                    self._load(stamp)
                    log("reloaded", file=self.path, listings=sorted(self.bodies))
            except (OSError, ListingFileError) as e:
                if self._stamp != ("bad", str(e)):
                    log("reload failed; serving the last good listings", error=str(e))
                    self._stamp = ("bad", str(e))
            return self.bodies


def log(msg: str, **fields) -> None:
    print(json.dumps({"ts": round(time.time(), 3), "msg": msg, **fields}), file=sys.stderr, flush=True)


def handler(listings: Listings) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "infershift-listing"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
            pass  # no access log: the gateway has one

        def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _drain(self) -> None:
            n = self.headers.get("content-length")
            if n and n.isdigit() and int(n) <= 1 << 20:
                self.rfile.read(int(n))
            elif n or self.headers.get("transfer-encoding"):
                self.close_connection = True  # a body we will not read: do not reuse the connection

        def _handle(self) -> None:
            self._drain()
            path = self.path.split("?", 1)[0]
            if path == HEALTH_PATH and self.command in ("GET", "HEAD"):
                self._send(200, b'{"status":"ok"}')
                return
            if path != PATH:
                self._send(404, _error(f"no route for {path}", "invalid_request_error", "route_not_found"))
                return
            if self.command not in ("GET", "HEAD"):
                self._send(405, METHOD_NOT_ALLOWED, {"allow": ALLOW})
                return
            bodies = listings.current()
            key = self.headers.get(contract.LISTING_HEADER)
            if key is None and len(bodies) == 1:
                key = next(iter(bodies))
            body = bodies.get(key or "")
            if body is None:
                self._send(404, _error(f"no model listing {key!r} here" if key else
                                       f"no model listing named (the {contract.LISTING_HEADER} header)",
                                       "invalid_request_error", "listing_not_found"))
                return
            self._send(200, body)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle

    return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infershift.picker.listing",
                                 description="A static /v1/models server (the gateway's model listing).")
    ap.add_argument("--file", required=True, help="the listings file (JSON: key -> OpenAI model list)")
    ap.add_argument("--port", type=int, default=contract.MODELS_LISTING_PORT)
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args(argv)
    try:
        listings = Listings(args.file)
    except (OSError, ListingFileError) as e:
        print(f"listing: {e}", file=sys.stderr)
        return 2
    server = ThreadingHTTPServer((args.host, args.port), handler(listings))
    server.daemon_threads = True

    def stop(signum, frame) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log("listening", host=args.host, port=server.server_address[1], file=args.file, listings=sorted(listings.bodies))
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
