"""The fleet's TLS certificates: a CA, and the broker, device and worker certificates.

MQTT runs over mutual TLS (DESIGN.md, "MQTT topics"): the broker checks each client's certificate
against the fleet CA and takes its common name as the client's identity, so a device's
certificate CN is its device name, and a verifier worker's is the name its ACL lines grant. This
is the operator's tool for that (``edgeward fleet ca init|issue``) and the demo's and tests'
throwaway CA (:class:`edgeward.simulator.devbroker.DevCA`) is built on it.

Keys are P-256 (``cryptography``); private keys are written with mode 0600 through
:func:`edgeward.core.persist.write_atomic`; a CA key is never overwritten (a leaf is re-issued
in place). This CA is for transport
identity only; the maker CA that endorses attestation keys is :mod:`edgeward.attestation.enroll`.

I/O: the given folders.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeward.core.errors import ConfigError
from edgeward.core.fileio import OPERATOR, read_bounded
from edgeward.core.persist import write_atomic

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
CA_CRL = "crl.pem"  # the broker's crlfile: revoked device and worker certificates
CRL_DAYS = 30
ROLES = ("broker", "device", "worker")
_MAX_PEM = 64 * 1024
_CA_HINT = "create it with `edgeward fleet ca init --out DIR`"


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


class FleetCA:
    """A P-256 CA over the fleet's TLS identities; its files live in ``root``."""

    def __init__(self, root: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
                 *, days: int = 365) -> None:
        self.root = root
        self._cert = cert
        self._key = key
        self.days = days
        self.ca = root / CA_CERT
        self.crl = root / CA_CRL

    @classmethod
    def create(cls, root: Path, name: str, *, days: int = 3650, leaf_days: int = 365,
               keep_key: bool = True) -> FleetCA:
        """A new CA in ``root`` (``ca.pem``, and ``ca.key`` 0600 unless ``keep_key`` is false)."""
        if not name or len(name) > 64:
            raise ConfigError("the CA name must be 1 to 64 characters")
        root.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        if keep_key:
            try:
                write_atomic(root / CA_KEY, _pem_key(key), mode=0o600, overwrite=False)
            except FileExistsError:
                raise ConfigError(f"{root} already holds a fleet CA",
                                  hint="issue certificates from it with `edgeward fleet ca "
                                  "issue`, or choose another --out folder") from None
        write_atomic(root / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), mode=0o644,
                     overwrite=not keep_key)
        made = cls(root, cert, key, days=leaf_days)
        made.write_crl(set())  # the broker's crlfile must exist from the start
        return made

    @classmethod
    def load(cls, root: Path, *, days: int = 365) -> FleetCA:
        """The CA that :meth:`create` wrote into ``root``."""
        cert_pem, key_pem = (read_bounded(root / name, _MAX_PEM, what="fleet CA file",
                                          faults=OPERATOR, hint=_CA_HINT)
                             for name in (CA_CERT, CA_KEY))
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{root} does not hold a fleet CA (ca.pem, ca.key): {e}") from e
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{root / CA_KEY} is not an EC private key")
        return cls(root, cert, key, days=days)

    def issue(self, cn: str, *, server: bool = False, hosts: Sequence[str] = (),
              out: Path | None = None) -> Cert:
        """Issue ``cn``'s certificate and key into ``out`` (default: the CA's folder).

        A server certificate (the broker) names ``hosts`` in its SAN (default: localhost and
        127.0.0.1), since clients check the host name against it; a client certificate (a
        device or a worker) is for client authentication only.
        """
        if not cn or len(cn) > 64 or any(c in cn for c in "/+#\0") or not cn.isprintable():
            raise ConfigError(f"certificate name {cn!r} must be 1 to 64 printable characters "
                              "without '/', '+' or '#' (it is an MQTT client id)")
        out = out or self.root
        out.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=self.days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server:
            b = b.add_extension(_san(hosts or ("localhost", "127.0.0.1")), critical=False)
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                critical=False)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                                critical=False)
        cert = b.sign(self._key, hashes.SHA256())
        cp, kp = out / f"{cn}.crt", out / f"{cn}.key"
        write_atomic(kp, _pem_key(key), mode=0o600, overwrite=True)
        write_atomic(cp, cert.public_bytes(serialization.Encoding.PEM), mode=0o644,
                     overwrite=True)
        return Cert(cp, kp)

    # --- revocation (RFC 5280 §5): the broker refuses a revoked certificate at the handshake ---

    def revoked(self) -> set[int]:
        """The serials the current ``crl.pem`` revokes (empty if there is none yet)."""
        if not self.crl.exists():
            return set()
        data = read_bounded(self.crl, 4 * 1024 * 1024, what="fleet CRL", faults=OPERATOR)
        try:
            crl = x509.load_pem_x509_crl(data)
        except ValueError as e:
            raise ConfigError(f"{self.crl} is not a PEM CRL: {e}") from e
        if not crl.is_signature_valid(self._key.public_key()):
            raise ConfigError(f"{self.crl} is not signed by this fleet CA")
        return {r.serial_number for r in crl}

    def write_crl(self, serials: set[int], *, days: int = CRL_DAYS) -> Path:
        """Sign and write the cumulative CRL; it must be re-issued before ``days`` pass."""
        now = _now()
        b = (x509.CertificateRevocationListBuilder().issuer_name(self._cert.subject)
             .last_update(now - datetime.timedelta(minutes=5))
             .next_update(now + datetime.timedelta(days=days)))
        for serial in sorted(serials):
            b = b.add_revoked_certificate(x509.RevokedCertificateBuilder()
                                          .serial_number(serial).revocation_date(now).build())
        crl = b.sign(self._key, hashes.SHA256())
        write_atomic(self.crl, crl.public_bytes(serialization.Encoding.PEM), mode=0o644,
                     overwrite=True)
        return self.crl

    def revoke(self, certs: Sequence[Path], *, days: int = CRL_DAYS) -> set[int]:
        """Add the certificates' serials to the CRL (they must be this CA's); return them all."""
        serials = self.revoked()
        for path in certs:
            data = read_bounded(path, _MAX_PEM, what="certificate", faults=OPERATOR)
            try:
                cert = x509.load_pem_x509_certificate(data)
            except ValueError as e:
                raise ConfigError(f"{path} is not a PEM certificate: {e}") from e
            if cert.issuer != self._cert.subject:
                raise ConfigError(f"{path} was not issued by this fleet CA",
                                  hint="revoke it with the CA that issued it")
            serials.add(cert.serial_number)
        self.write_crl(serials, days=days)
        return serials
