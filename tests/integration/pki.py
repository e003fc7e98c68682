"""A throwaway PKI for TLS tests: a CA and certificates it signs, made with the openssl CLI.

    ca = pki.CA(directory)                  # ca.pem / ca.key (EC P-256, valid 2 days)
    cert, key = ca.issue("server")          # server.pem / server.key for 127.0.0.1, localhost
    cert, key = ca.issue("client", san=None)

Every file lives in the given directory (a test's own temporary one); nothing is committed.
"""
import os
import subprocess


def openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (args[0], r.stderr.decode()[-500:]))
    return r.stdout


class CA:
    def __init__(self, directory, name="ca", cn="sidecast-test-ca", curve="P-256"):
        os.makedirs(directory, exist_ok=True)
        self.dir = directory
        self.name = name
        self.pem = os.path.join(directory, name + ".pem")
        self.key = os.path.join(directory, name + ".key")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:" + curve,
                "-nodes", "-keyout", self.key, "-out", self.pem, "-days", "2", "-subj",
                "/CN=" + cn, cwd=directory)

    def issue(self, name, san="IP:127.0.0.1,DNS:localhost", days=2, cn=None):
        """Returns (certificate, key) paths: name.pem (the leaf) and name.key."""
        d = self.dir
        ext = os.path.join(d, name + ".ext")
        with open(ext, "w") as f:
            if san:
                f.write("subjectAltName=%s\n" % san)
            f.write("basicConstraints=CA:FALSE\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", name + ".key", "-out", name + ".csr", "-subj",
                "/CN=" + (cn or name), cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", self.pem, "-CAkey", self.key,
                "-CAcreateserial", "-out", name + ".pem", "-days", str(days), "-extfile", ext,
                cwd=d)
        return os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")
