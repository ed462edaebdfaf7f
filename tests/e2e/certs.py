"""Test certificates made with the `openssl` CLI: one private CA per test run, and certificates
for test domains (server and client use for s2s), plus deliberately bad ones for negative tests.

    ca = TestCA(workdir / "ca")
    good = ca.issue("p1.test")                        # EKU serverAuth+clientAuth, SAN DNS:p1.test
    srv_only = ca.issue("p1.test", server_only_eku=True, name="p1-srvonly")
    wrong = ca.issue_wrong_name("p1.test")            # CA-signed, but SAN is only wrong.invalid
    selfie = self_signed(workdir / "ss", "p1.test")    # not from the CA
    good.cert, good.key, ca.cert                      # pathlib.Path of PEM files

Keys are EC P-256 by default (key_type="rsa" for RSA 2048). Nothing here is secret or long-lived.
"""
import dataclasses
import pathlib
import secrets
import subprocess

OPENSSL = "openssl"


@dataclasses.dataclass(frozen=True)
class Issued:
    domain: str
    cert: pathlib.Path  # PEM, the leaf certificate only
    key: pathlib.Path  # PEM, unencrypted PKCS#8
    names: tuple = ()  # the DNS names in subjectAltName

    @property
    def chain(self):
        """The leaf followed by its issuer (written next to the leaf when issued by a CA)."""
        p = self.cert.with_name(self.cert.stem + "-chain.pem")
        return p if p.exists() else self.cert


def _run(*args, cwd=None):
    r = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed:\n{r.stderr}")
    return r.stdout


def _genkey(path, key_type):
    if key_type == "ec":
        _run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    elif key_type == "rsa":
        _run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path)
    else:
        raise ValueError(f"unknown key_type {key_type!r}")
    path.chmod(0o600)


def _leaf_ext(names, *, server_only_eku, key_type, self_signed=False):
    san = ",".join(f"DNS:{n}" for n in names)
    ku = "critical,digitalSignature" + (",keyEncipherment" if key_type == "rsa" else "")
    eku = "serverAuth" if server_only_eku else "serverAuth,clientAuth"
    lines = [
        "[req]",
        "distinguished_name = dn",
        "[dn]",
        "[leaf]",
        "basicConstraints = critical,CA:FALSE",
        f"keyUsage = {ku}",
        f"extendedKeyUsage = {eku}",
        f"subjectAltName = {san}",
        "subjectKeyIdentifier = hash",
    ]
    if not self_signed:
        lines.append("authorityKeyIdentifier = keyid,issuer")
    return "\n".join(lines) + "\n"


def self_signed(directory, domain, *, name=None, extra_names=(), server_only_eku=False, key_type="ec", days=30):
    """A self-signed leaf certificate for `domain` (SAN DNS:domain), not issued by any CA.

    Trusting it means naming this very file as the trust anchor (Python's ssl and OpenSSL accept a
    self-signed leaf in cafile); peers that only trust the test CA see it as untrusted."""
    d = pathlib.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    name = name or f"{domain}-selfsigned"
    key, cert, ext = d / f"{name}.key", d / f"{name}.pem", d / f"{name}.ext"
    names = (domain, *extra_names)
    _genkey(key, key_type)
    ext.write_text(_leaf_ext(names, server_only_eku=server_only_eku, key_type=key_type, self_signed=True))
    _run("req", "-new", "-x509", "-key", key, "-out", cert, "-days", days, "-sha256",
         "-subj", f"/O=Entente tests (self-signed)/CN={domain}", "-config", ext, "-extensions", "leaf")
    return Issued(domain, cert, key, names)


class TestCA:
    """A private certificate authority in `directory` (ca.key, ca.pem), made fresh per test run."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory, *, key_type="ec", days=30, cn="Entente test CA"):
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key_type = key_type
        self.days = days
        self.key = self.dir / "ca.key"
        self.cert = self.dir / "ca.pem"
        ext = self.dir / "ca.ext"
        ext.write_text(
            "[req]\ndistinguished_name = dn\n[dn]\n"
            "[ca]\n"
            "basicConstraints = critical,CA:TRUE,pathlen:0\n"
            "keyUsage = critical,keyCertSign,cRLSign\n"
            "subjectKeyIdentifier = hash\n"
        )
        _genkey(self.key, key_type)
        _run("req", "-new", "-x509", "-key", self.key, "-out", self.cert, "-days", days, "-sha256",
             "-subj", f"/O=Entente tests/CN={cn}", "-config", ext, "-extensions", "ca")

    def issue(self, domain, *, server_only_eku=False, extra_names=(), name=None, san=None, key_type=None):
        """Key and certificate for `domain`, signed by this CA.

        subjectAltName holds DNS:domain and DNS:extra_names (or exactly `san` when given, for the
        wrong-name case). EKU is serverAuth+clientAuth (usable as s2s server and client cert), or
        serverAuth only with server_only_eku=True (what public CAs now issue). Files are
        `<name>.key`, `<name>.pem` and `<name>-chain.pem` (leaf + CA), name defaulting to domain."""
        key_type = key_type or self.key_type
        name = name or domain
        names = tuple(san) if san is not None else (domain, *extra_names)
        key, csr = self.dir / f"{name}.key", self.dir / f"{name}.csr"
        cert, ext = self.dir / f"{name}.pem", self.dir / f"{name}.ext"
        _genkey(key, key_type)
        ext.write_text(_leaf_ext(names, server_only_eku=server_only_eku, key_type=key_type))
        _run("req", "-new", "-key", key, "-out", csr, "-subj", f"/O=Entente tests/CN={domain}")
        _run("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
             "-set_serial", secrets.randbits(63),
             "-days", self.days, "-sha256", "-out", cert, "-extfile", ext, "-extensions", "leaf")
        (self.dir / f"{name}-chain.pem").write_text(cert.read_text() + self.cert.read_text())
        return Issued(domain, cert, key, names)

    def issue_wrong_name(self, domain, *, wrong="wrong.invalid", **kw):
        """A CA-signed certificate meant to be served as `domain` whose SAN names only `wrong`."""
        kw.setdefault("name", f"{domain}-wrongname")
        return self.issue(domain, san=(wrong,), **kw)

    def self_signed(self, domain, **kw):
        """A self-signed certificate for `domain` (not from this CA), written in this CA's folder."""
        return self_signed(self.dir, domain, **kw)

    def verify(self, cert, purpose="sslserver"):
        """True when `openssl verify` accepts cert (a path) under this CA for purpose."""
        r = subprocess.run([OPENSSL, "verify", "-purpose", purpose, "-CAfile", str(self.cert), str(cert)],
                           capture_output=True, text=True, timeout=30)
        return r.returncode == 0


def describe(cert):
    """`openssl x509 -text` of a certificate, for assertions and debugging."""
    return _run("x509", "-in", cert, "-noout", "-text")
