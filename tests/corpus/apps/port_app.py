"""A web app that binds its own port from `--port=N`, as a Tornado app's
`app.listen(options.port)` does (on every address): the kind of program
supervisord ran with `--port` and appvisor cannot hand a held socket.
Answers every GET with "port app on N". Standard library only.
"""

import http.server
import signal
import sys


def main():
    port = 8000
    for i, word in enumerate(sys.argv[1:], 1):
        if word.startswith("--port="):
            port = int(word.split("=", 1)[1])
        elif word == "--port":
            port = int(sys.argv[i + 1])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = ("port app on %d\n" % port).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    server = http.server.HTTPServer(("", port), Handler)
    print("port app listening on %d" % port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
