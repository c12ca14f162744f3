"""A real RFC 3161 Time-Stamp Authority on 127.0.0.1, built from OpenSSL's `ts -reply`.

`make_tsa_pki(folder)` creates, with the openssl command, a CA and a TSA key + certificate (issued
by that CA, ExtendedKeyUsage timeStamping, critical) and the `tsa.cnf` that `openssl ts` reads.
`run_tsa(folder)` starts this file as a separate process: a small aiohttp server whose POST
handler writes the query to a file and runs `openssl ts -reply` on it, one request at a time
(openssl bumps a serial file). Stopping the process is a real outage: connections are refused.

    python -m tests.support.tsa --dir FOLDER --port PORT
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

POLICY_OID = "1.3.6.1.4.1.57264.1.1"
OTHER_POLICY_OID = "1.3.6.1.4.1.57264.1.2"

_TSA_CNF = """\
[ tsa ]
default_tsa = tsa_config

[ tsa_config ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.crt
certs = $dir/chain.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = {policy}
other_policies = {other_policy}
digests = sha256, sha384, sha512
accuracy = secs:1, millisecs:0, microsecs:0
clock_precision_digits = 3
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""

_EXTENSIONS = """\
[ tsa_ext ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, nonRepudiation
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ ca_ext ]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ plain_ext ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class TsaPki:
    folder: Path
    ca_cert: Path
    tsa_cert: Path
    tsa_key: Path
    config: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_tsa_pki(folder: Path, name: str = "Test TSA", *, eku: bool = True,
                 intermediate: bool = False) -> TsaPki:
    """CA + TSA certificate and the tsa.cnf of `openssl ts`, all created by openssl.

    `eku=False` issues the signer certificate without the timeStamping purpose (a certificate
    that must not be accepted for time stamps); openssl refuses to sign with it, so such a TSA is
    only useful to test the checker on hand-assembled tokens.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ext.cnf").write_text(_EXTENSIONS)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", "3650", "-subj", f"/O=finrtc tests/CN={name} CA",
             "-addext", "basicConstraints=critical,CA:true",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    issuer = "ca"
    if intermediate:
        # root CA -> issuing CA -> TSA, as commercial TSAs are set up.
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "sub.key", "-out", "sub.csr",
                 "-subj", f"/O=finrtc tests/CN={name} issuing CA", cwd=folder)
        _openssl("x509", "-req", "-in", "sub.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", "sub.crt", "-days", "3650", "-extfile", "ext.cnf",
                 "-extensions", "ca_ext", cwd=folder)
        issuer = "sub"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tsa.key", "-out", "tsa.csr",
             "-subj", f"/O=finrtc tests/CN={name}", cwd=folder)
    _openssl("x509", "-req", "-in", "tsa.csr", "-CA", f"{issuer}.crt", "-CAkey", f"{issuer}.key",
             "-CAcreateserial", "-out", "tsa.crt", "-days", "3650", "-extfile", "ext.cnf",
             "-extensions", "tsa_ext" if eku else "plain_ext", cwd=folder)
    # Extra certificates in each token (openssl adds the signer's own).
    chain = [folder / "sub.crt"] if intermediate else []
    (folder / "chain.pem").write_bytes(b"".join(p.read_bytes() for p in [*chain, folder / "ca.crt"]))
    (folder / "serial").write_text("01\n")
    config = folder / "tsa.cnf"
    config.write_text(_TSA_CNF.format(dir=folder, policy=POLICY_OID, other_policy=OTHER_POLICY_OID))
    return TsaPki(folder, folder / "ca.crt", folder / "tsa.crt", folder / "tsa.key", config)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class TsaProcess:
    """The TSA server process; `stop()` then `start()` again is an outage on the same URL."""

    def __init__(self, pki: TsaPki, port: int | None = None) -> None:
        self.pki = pki
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/tsa"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = pki.folder / "tsa.log"

    def start(self, timeout_s: float = 15.0) -> None:
        assert self.process is None, "TSA already running"
        root = Path(__file__).resolve().parents[2]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(root), str(root / "src"), os.environ.get("PYTHONPATH", "")]))
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.tsa", "--dir", str(self.pki.folder),
                 "--port", str(self.port)],
                cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise AssertionError(f"TSA exited ({code}): {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"TSA did not listen: {self.log.read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.process is not None


@contextmanager
def run_tsa(pki: TsaPki, port: int | None = None) -> Iterator[TsaProcess]:
    tsa = TsaProcess(pki, port)
    tsa.start()
    try:
        yield tsa
    finally:
        tsa.stop()


# ----------------------------------------------------------------------- the server process


def _serve(folder: Path, port: int) -> None:
    from aiohttp import web

    lock = asyncio.Lock()
    config = folder / "tsa.cnf"

    async def reply(request: web.Request) -> web.Response:
        if request.content_type != "application/timestamp-query":
            return web.Response(status=415, text="expected application/timestamp-query")
        query = await request.read()
        async with lock:
            with tempfile.TemporaryDirectory(dir=folder) as work:
                query_file = Path(work) / "q.tsq"
                reply_file = Path(work) / "r.tsr"
                query_file.write_bytes(query)
                process = await asyncio.create_subprocess_exec(
                    "openssl", "ts", "-reply", "-config", str(config), "-queryfile",
                    str(query_file), "-out", str(reply_file),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                )
                _out, err = await process.communicate()
                if process.returncode != 0 or not reply_file.exists():
                    return web.Response(status=500, text=err.decode(errors="replace"))
                body = reply_file.read_bytes()
        return web.Response(body=body, content_type="application/timestamp-reply")

    app = web.Application()
    app.router.add_post("/tsa", reply)
    web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    _serve(args.dir, args.port)


if __name__ == "__main__":
    main()
