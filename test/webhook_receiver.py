#!/usr/bin/env python3
#
# webhook_receiver.py
#     Tiny webhook receiver for mock_smoke.sh: records every POST it gets
#     (path, headers, body) as one JSON line in a file and answers 200.
#
#     Paths starting with /fail<N> answer 500 to the first N requests on
#     that path and 200 afterwards; /always500 always answers 500.  On
#     start it prints "receiver listening on PORT" (port 0 = pick one).
#
# Usage: webhook_receiver.py PORT OUTFILE
#
# test/webhook_receiver.py

import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
counts = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        with lock:
            n = counts.get(self.path, 0) + 1
            counts[self.path] = n
            m = re.match(r"^/fail(\d+)", self.path)
            status = 200
            if self.path.startswith("/always500"):
                status = 500
            elif m and n <= int(m.group(1)):
                status = 500
            rec = {"path": self.path, "n": n, "status": status,
                   "headers": {k.lower(): v for k, v in self.headers.items()},
                   "body": body}
            with open(self.server.outfile, "a") as f:
                f.write(json.dumps(rec) + "\n")
        out = b"ok" if status == 200 else b"fail"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, fmt, *args):
        pass


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    srv.outfile = sys.argv[2]
    print("receiver listening on %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
