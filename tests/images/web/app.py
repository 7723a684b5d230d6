"""The test stand-in for the runbooks' Odoo: a threaded HTTP server on
$PORT (default 8000) that answers `/`, `/version`, `/web/login` and
`/web/health` with its version ($APP_VERSION). With APP_MODE=500 it answers
500 on every path and so never becomes healthy; `python3 app.py health` is
the container's healthcheck.

With $DB_HOST set (PostgreSQL, database $DB_NAME, user $DB_USER, no
password) `/web/db` lists the rows of its table `notes` and
`/web/db?put=TEXT` adds one (the table is made on first use). With
$REDIS_HOST set, `/web/session` counts its calls in Redis (INCR)."""
import http.server
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request

PORT = int(os.environ.get("PORT", "8000"))
VERSION = os.environ.get("APP_VERSION", "unknown")
MODE = os.environ.get("APP_MODE", "ok")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if MODE == "500":
            self.reply(500, "broken %s\n" % VERSION)
        elif url.path in ("/", "/version", "/web/login", "/web/health"):
            self.reply(200, "%s\n" % VERSION)
        elif url.path == "/web/db":
            try:
                put = urllib.parse.parse_qs(url.query).get("put")
                self.reply(200, "".join("%s\n" % r for r in notes(put[0] if put else None)))
            except Exception as e:  # the database is down or refused
                self.reply(503, "database: %s\n" % e)
        elif url.path == "/web/session":
            try:
                self.reply(200, "%d\n" % incr("stackpin-test:hits"))
            except Exception as e:
                self.reply(503, "redis: %s\n" % e)
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


def notes(put):
    """The rows of `notes`, after adding `put` when it is given."""
    import psycopg2

    conn = psycopg2.connect(
        host=os.environ["DB_HOST"],
        dbname=os.environ.get("DB_NAME", "postgres"),
        user=os.environ.get("DB_USER", "postgres"),
        connect_timeout=3,
    )
    try:
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text NOT NULL)")
            if put is not None:
                cur.execute("INSERT INTO notes (body) VALUES (%s)", (put,))
            cur.execute("SELECT body FROM notes ORDER BY id")
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def incr(key):
    """Redis INCR over its plain protocol."""
    with socket.create_connection((os.environ["REDIS_HOST"], 6379), timeout=3) as s:
        s.sendall(("INCR %s\r\n" % key).encode())
        line = s.makefile("rb").readline().decode().strip()
    if not line.startswith(":"):
        raise RuntimeError(line)
    return int(line[1:])


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
