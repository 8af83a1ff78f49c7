"""TLS for lab zones: a certificate authority and a server certificate per lab.

``Lab(tls=True)`` makes a self-signed CA and one server certificate for
``127.0.0.1`` and ``localhost`` (so ``sslmode=verify-full`` checks the host name
too), copies them into every zone's data folder and turns ``ssl`` on. Clients
then verify the server with :attr:`LabTLS.ca_cert`::

    with Lab(zones=["a", "b"], tls=True) as lab:
        zones = {"a": {"endpoints": [lab.zones()["a"]], "params": lab.tls.params()}}

Keys are made with the ``cryptography`` package when it is installed, else with the
``openssl`` program. A second, unrelated CA (:func:`make_ca`) is what a test of a
wrong certificate needs.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from zonal_lab.errors import LabError

__all__ = ["SERVER_NAMES", "LabTLS", "make_ca", "make_tls"]

SERVER_NAMES = ("127.0.0.1", "localhost")
"""What the server certificate is valid for (subject alternative names)."""
_DAYS = 30
_CA_NAME = "zonal lab CA"


@dataclass(frozen=True)
class LabTLS:
    """The files of a lab's TLS: the CA clients trust, the servers' certificate and key."""

    folder: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path

    def params(self, sslmode: str = "verify-full") -> dict[str, str]:
        """Per-zone driver parameters that verify the lab's servers:
        ``{"sslmode": ..., "sslrootcert": <the lab's CA>}``."""
        return {"sslmode": sslmode, "sslrootcert": str(self.ca_cert)}


def make_ca(folder: Path, name: str = _CA_NAME) -> Path:
    """A self-signed CA in ``folder`` (``ca.crt``, ``ca.key``); returns the certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    if _have_cryptography():
        _ca_with_cryptography(folder, name)
    else:
        _ca_with_openssl(folder, name)
    return folder / "ca.crt"


def make_tls(folder: Path, names: tuple[str, ...] = SERVER_NAMES) -> LabTLS:
    """A CA and a server certificate signed by it for ``names``, in ``folder``."""
    make_ca(folder)
    if _have_cryptography():
        _server_with_cryptography(folder, names)
    else:
        _server_with_openssl(folder, names)
    (folder / "server.key").chmod(0o600)  # PostgreSQL refuses a key others can read
    return LabTLS(folder, folder / "ca.crt", folder / "server.crt", folder / "server.key")


def _have_cryptography() -> bool:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return False
    return True


# -- with the cryptography package ------------------------------------------------------


def _ca_with_cryptography(folder: Path, name: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    (folder / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(folder / "ca.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


def _server_with_cryptography(folder: Path, names: tuple[str, ...]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(folder / "server.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


def _write_key(path: Path, data: bytes) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_bytes(data)


# -- with the openssl program -----------------------------------------------------------


def _openssl(*args: str) -> None:
    program = shutil.which("openssl")
    if program is None:
        raise LabError(
            "tls=True needs the cryptography package or the openssl program "
            "(fix: pip install cryptography)"
        )
    proc = subprocess.run([program, *args], capture_output=True, text=True, check=False,
                          timeout=60)
    if proc.returncode != 0:
        raise LabError(f"openssl {args[0]} failed: {proc.stderr.strip()[-1000:]}")


def _ca_with_openssl(folder: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", str(_DAYS), "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.crt"))
    (folder / "ca.key").chmod(0o600)


def _server_with_openssl(folder: Path, names: tuple[str, ...]) -> None:
    alt = []
    for n in names:
        try:
            ipaddress.ip_address(n)
            alt.append(f"IP:{n}")
        except ValueError:
            alt.append(f"DNS:{n}")
    ext = folder / "server.ext"
    ext.write_text(
        f"subjectAltName={','.join(alt)}\nbasicConstraints=critical,CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n"
    )
    csr = folder / "server.csr"
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-subj", f"/CN={names[0]}",
             "-keyout", str(folder / "server.key"), "-out", str(csr))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(folder / "ca.crt"),
             "-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-days", str(_DAYS),
             "-extfile", str(ext), "-out", str(folder / "server.crt"))
    csr.unlink()
    ext.unlink()
