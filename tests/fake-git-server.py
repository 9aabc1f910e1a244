#!/usr/bin/env python3
"""A hostile git server on 127.0.0.1 for the tests: it answers a fetch or a push
with one misbehaviour, over git:// (pkt-lines) or smart HTTP.

usage: tests/fake-git-server.py MODE REPO [--http]

REPO is a real bare repository: its refs are advertised, and what the mode does
not corrupt is served honestly by `git upload-pack` / `git receive-pack` of it.
It prints `port=N` once it listens, and runs until killed. Modes:

  count       a pack header that claims 0xFFFFFFFF objects
  delta       a small pack whose delta claims a 67 GB result
  blob        a blob header that claims 2.5 GiB
  progress    side-band progress messages without end
  slow-refs   a ref advertisement at one byte a second
  slow-pack   the real pack at one byte a second
  refs        a ref advertisement without end
  pack        a valid pack without end
  no-tree     the real tip commit without its tree or files
  push-report push reports without end (fetches are honest)
"""
import hashlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = sys.argv[1]
REPO = os.path.abspath(sys.argv[2])
HTTP = "--http" in sys.argv[3:]
PUSH_MODES = {"push-report"}
ZERO = b"0" * 40


def pkt(data):
    if isinstance(data, str):
        data = data.encode()
    return b"%04x" % (len(data) + 4) + data


FLUSH = b"0000"


def git(*args, data=None):
    return subprocess.run(["git", "--git-dir", REPO, *args], input=data,
                          capture_output=True, check=True).stdout


def refs():
    out = git("for-each-ref", "--format=%(objectname) %(refname)", "refs/heads")
    return [tuple(line.split(" ", 1)) for line in out.decode().splitlines()]


def tip():
    r = refs()
    return r[0][0] if r else hashlib.sha1(b"no such commit").hexdigest()


def advertisement(caps):
    """The refs of REPO as pkt-lines, capabilities on the first, then a flush."""
    r = refs() or [(ZERO.decode(), "capabilities^{}")]
    out = pkt(f"{r[0][0]} {r[0][1]}\0{caps}\n")
    for oid, name in r[1:]:
        out += pkt(f"{oid} {name}\n")
    return out + FLUSH


def endless_refs():
    oid = tip()
    yield pkt(f"{oid} refs/heads/main\0ofs-delta\n")
    n = 0
    while True:
        chunk = b"".join(pkt(f"{oid} refs/heads/branch-{n + i:012d}\n") for i in range(1000))
        n += 1000
        yield chunk


def object_header(kind, size):
    """A pack entry's type and size, as git writes them."""
    byte = (kind << 4) | (size & 15)
    size >>= 4
    out = bytearray()
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pack(entries):
    body = b"PACK" + struct.pack(">II", 2, len(entries)) + b"".join(entries)
    return body + hashlib.sha1(body).digest()


def blob_entry(data):
    return object_header(3, len(data)) + zlib.compress(data)


def delta_bomb():
    base = b"base of a delta\n"
    first = blob_entry(base)
    # Result size 67 GB; one insert of 4 bytes.
    delta = varint(len(base)) + varint(67_000_000_000) + b"\x04boom"
    ofs = len(first)
    second = object_header(6, len(delta)) + varint_ofs(ofs) + zlib.compress(delta)
    return pack([first, second])


def varint_ofs(ofs):
    """The offset encoding of an OFS_DELTA's base."""
    out = bytearray([ofs & 0x7F])
    ofs >>= 7
    while ofs:
        ofs -= 1
        out.insert(0, 0x80 | (ofs & 0x7F))
        ofs >>= 7
    return bytes(out)


def huge_blob():
    head = b"PACK" + struct.pack(">II", 2, 1) + object_header(3, 2_684_354_560)
    z = zlib.compressobj()
    return head + z.compress(b"x" * 4096) + z.flush(zlib.Z_SYNC_FLUSH)


def endless_pack():
    """Valid blobs of 64 KiB, one after the other, about 20 MB a second."""
    yield b"PACK" + struct.pack(">II", 2, 100_000)
    filler = os.urandom(65536)
    n = 0
    while True:
        started = time.monotonic()
        chunk = []
        for _ in range(32):
            n += 1
            data = b"%d\n" % n + filler
            chunk.append(object_header(3, len(data)) + zlib.compress(data, 0))
        yield b"".join(chunk)
        time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))


def endless_progress():
    n = 0
    while True:
        n += 1
        yield pkt(b"\x02" + b"Counting objects: %d\r" % n)
        if n % 100 == 0:
            time.sleep(0.001)


def trickle(data):
    for i in range(len(data)):
        yield data[i:i + 1]
        time.sleep(1)


def real_pack(revs=True):
    t = tip().encode() + b"\n"
    return git("pack-objects", "--stdout", "-q", *(["--revs"] if revs else []), data=t)


def hold():
    while True:
        time.sleep(1)
        yield b""


def after_negotiation():
    """What the server sends once the client said `done`."""
    if MODE == "count":
        yield pack([])[:8] + struct.pack(">I", 0xFFFFFFFF) + blob_entry(b"one\n")
        yield from hold()
    elif MODE == "delta":
        yield delta_bomb()
        yield from hold()
    elif MODE == "blob":
        yield huge_blob()
        yield from hold()
    elif MODE == "progress":
        yield from endless_progress()
    elif MODE == "slow-pack":
        yield from trickle(real_pack())
    elif MODE == "pack":
        yield from endless_pack()
    elif MODE == "no-tree":
        yield real_pack(revs=False)
    else:
        raise SystemExit(f"unknown mode {MODE}")


def upload_pack_advertisement():
    caps = "ofs-delta side-band-64k" if MODE == "progress" else "ofs-delta"
    if MODE == "refs":
        return endless_refs()
    if MODE == "slow-refs":
        return trickle_endless(endless_refs())
    return iter([advertisement(caps)])


def trickle_endless(chunks):
    for chunk in chunks:
        for i in range(len(chunk)):
            yield chunk[i:i + 1]
            time.sleep(1)


def read_pkt(f):
    head = f.read(4)
    if len(head) < 4:
        return None
    n = int(head, 16)
    if n == 0:
        return b""
    return f.read(n - 4)


def negotiate(f, send):
    """Reads wants and haves; answers NAK to each flush after the wants and to
    `done`. False when the client went away."""
    while True:  # wants, up to their flush
        line = read_pkt(f)
        if line is None:
            return False
        if line == b"":
            break
    while True:
        line = read_pkt(f)
        if line is None:
            return False
        if line == b"":
            send(pkt("NAK\n"))
        elif line.startswith(b"done"):
            send(pkt("NAK\n"))
            return True


def endless_reports():
    yield pkt("unpack ok\n")
    while True:
        yield b"".join(pkt("ok refs/heads/main\n") for _ in range(1000))


def drain(f):
    def run():
        try:
            while f.read(65536):
                pass
        except OSError:
            pass
    threading.Thread(target=run, daemon=True).start()


def serve_git(conn):
    f = conn.makefile("rb")

    def send(data):
        conn.sendall(data)

    request = read_pkt(f)
    if not request:
        return
    service, _, _ = request.partition(b" ")
    service = service.decode()
    hostile = (service == "git-receive-pack") == (MODE in PUSH_MODES)
    if not hostile:
        subprocess.run(["git", service[len("git-"):], REPO], stdin=conn.fileno(),
                       stdout=conn.fileno(), stderr=subprocess.DEVNULL)
        return
    if service == "git-receive-pack":
        send(advertisement("report-status delete-refs ofs-delta"))
        while (line := read_pkt(f)) not in (None, b""):
            pass
        drain(f)
        for chunk in endless_reports():
            send(chunk)
        return
    for chunk in upload_pack_advertisement():
        send(chunk)
    if not negotiate(f, send):
        return
    for chunk in after_negotiation():
        send(chunk)


def git_server():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    print(f"port={s.getsockname()[1]}", flush=True)
    while True:
        conn, _ = s.accept()

        def run(conn=conn):
            try:
                serve_git(conn)
            except (OSError, ValueError):
                pass
            finally:
                conn.close()
        threading.Thread(target=run, daemon=True).start()


class Http(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def chunked(self, status, ctype, chunks):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for c in chunks:
            if c:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
                self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                out += self.rfile.read(size)
                self.rfile.readline()
            data = bytes(out)
        else:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            data = zlib.decompress(data, 31)
        return data

    def honest(self, service, data=None):
        env = dict(os.environ, GIT_PROJECT_ROOT=os.path.dirname(REPO),
                   GIT_HTTP_EXPORT_ALL="1", REQUEST_METHOD=self.command,
                   PATH_INFO=self.path.partition("?")[0],
                   QUERY_STRING=self.path.partition("?")[2],
                   CONTENT_TYPE=self.headers.get("Content-Type", ""),
                   REMOTE_USER="test", REMOTE_ADDR="127.0.0.1")
        env.pop("GIT_PROTOCOL", None)
        out = subprocess.run(["git", "http-backend"], input=data or b"", env=env,
                             capture_output=True).stdout
        head, _, body = out.partition(b"\r\n\r\n")
        ctype = "application/octet-stream"
        for line in head.decode("latin-1").splitlines():
            k, _, v = line.partition(":")
            if k.lower() == "content-type":
                ctype = v.strip()
        self.chunked(200, ctype, [body])

    def do_GET(self):
        service = self.path.partition("service=")[2]
        hostile = (service == "git-receive-pack") == (MODE in PUSH_MODES)
        if not hostile:
            return self.honest(service)
        head = pkt(f"# service={service}\n") + FLUSH
        ctype = f"application/x-{service}-advertisement"
        if service == "git-receive-pack":
            chunks = [advertisement("report-status delete-refs ofs-delta")]
        else:
            chunks = upload_pack_advertisement()
        self.chunked(200, ctype, ((head if i == 0 else b"") + c
                                  for i, c in enumerate(chunks)))

    def do_POST(self):
        service = self.path.rsplit("/", 1)[-1]
        data = self.body()
        hostile = (service == "git-receive-pack") == (MODE in PUSH_MODES)
        if not hostile:
            return self.honest(service, data)
        ctype = f"application/x-{service}-result"
        if service == "git-receive-pack":
            return self.chunked(200, ctype, endless_reports())
        if b"done" not in data:
            return self.chunked(200, ctype, [pkt("NAK\n")])
        self.chunked(200, ctype, _nak_then(after_negotiation()))


def _nak_then(chunks):
    yield pkt("NAK\n")
    yield from chunks


def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Http)
    server.daemon_threads = True
    print(f"port={server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    try:
        http_server() if HTTP else git_server()
    except KeyboardInterrupt:
        pass
