"""A stand-in serving engine for the supervisor tests (stdlib only, starts in tens of ms).

Same command line as the engine emulator where they overlap: ``fake_engine.py MODEL --port P
--served-model-name NAME [--start-delay S] [--fault never-ready|exit-on-start|ignore-sigterm]``.
``--dump FILE`` writes its argv, environment, pid and process group as JSON; ``--child`` starts
a sleeping child in its process group (to show the whole group is stopped).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def say(line: str) -> None:
    """One line to stdout (the supervisor's log file), flushed at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--start-delay", type=float, default=0.0)
    parser.add_argument("--fault", choices=["never-ready", "exit-on-start", "ignore-sigterm"])
    parser.add_argument("--dump")
    parser.add_argument("--child", action="store_true")
    args, _ = parser.parse_known_args()
    child = None
    if args.child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    if args.dump:
        info = {"argv": sys.argv[1:], "env": dict(os.environ), "pid": os.getpid(), "pgid": os.getpgid(0),
                "child": child.pid if child else None}
        with open(args.dump + ".tmp", "w") as handle:
            json.dump(info, handle)
        os.replace(args.dump + ".tmp", args.dump)
    say(f"fake engine {args.model} pid {os.getpid()} on port {args.port}")
    if args.fault == "exit-on-start":
        say(f"boom: {args.model} cannot start (pid {os.getpid()})")
        sys.exit(3)
    if args.fault == "ignore-sigterm":
        signal.signal(signal.SIGTERM, lambda *_: say("SIGTERM ignored"))
    else:
        def on_term(*_: object) -> None:
            say("SIGTERM received: shutting down")
            os._exit(0)
        signal.signal(signal.SIGTERM, on_term)
    ready_at = time.monotonic() + args.start_delay

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 — the http.server API
            ready = args.fault != "never-ready" and time.monotonic() >= ready_at
            if self.path == "/health":
                self._send(200 if ready else 503, b"")
            elif self.path == "/v1/models" and ready:
                body = {"object": "list", "data": [{"id": args.served_model_name, "object": "model"}]}
                self._send(200, json.dumps(body).encode())
            else:
                self._send(404, b"")

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
