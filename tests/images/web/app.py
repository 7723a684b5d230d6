"""The test stand-in for the runbooks' Odoo: a threaded HTTP server on
$PORT (default 8000) that answers `/`, `/version`, `/web/login` and
`/web/health` with its version ($APP_VERSION). With APP_MODE=500 it answers
500 on every path and so never becomes healthy; `python3 app.py health` is
the container's healthcheck."""
import http.server
import os
import signal
import sys
import threading
import time
import urllib.request

PORT = int(os.environ.get("PORT", "8000"))
VERSION = os.environ.get("APP_VERSION", "unknown")
MODE = os.environ.get("APP_MODE", "ok")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if MODE == "500":
            self.reply(500, "broken %s\n" % VERSION)
        elif self.path in ("/", "/version", "/web/login", "/web/health"):
            self.reply(200, "%s\n" % VERSION)
        else:
            self.reply(404, "not found\n")

    def reply(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-App-Version", VERSION)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def health():
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/web/health" % PORT, timeout=2) as r:
            sys.exit(0 if r.status == 200 else 1)
    except Exception as e:  # any failure is unhealthy
        print(e, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1:] == ["health"]:
        health()
    server = http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True

    def stop():
        # Stop accepting, let the requests in flight finish, exit.
        server.shutdown()
        server.server_close()
        time.sleep(0.5)
        os._exit(0)

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=stop).start())
    server.serve_forever()
