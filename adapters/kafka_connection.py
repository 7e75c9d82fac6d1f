"""Connection settings shared by every Kafka adapter, in librdkafka's (Java client's) vocabulary."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from application.errors import AuthenticationFailed, InvalidConfiguration, SecurityProtocolMismatch, TlsFailed

# Properties given as ``consumer.X`` or ``producer.X`` apply to that client only.
_ROLE_PREFIXES = ("consumer.", "producer.", "admin.")


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    bootstrap_servers: str
    properties: Mapping[str, str] = field(default_factory=dict)  # e.g. security.protocol, sasl.*, ssl.*

    def for_role(self, role: str) -> dict[str, str]:
        """Shared properties plus this role's ``role.``-prefixed ones (prefix removed), the latter winning."""
        shared = {k: v for k, v in self.properties.items() if not k.startswith(_ROLE_PREFIXES)}
        prefix = f"{role}."
        shared.update({k[len(prefix) :]: v for k, v in self.properties.items() if k.startswith(prefix)})
        return shared


def variable_name(prop: str) -> str:
    """The environment variable that sets a property: ``sasl.username`` -> ``KAFKA_SASL_USERNAME``."""
    return "KAFKA_" + prop.upper().replace(".", "_").replace("-", "_")


def _get(properties: Mapping[str, str], *names: str) -> str:
    for name in names:
        if properties.get(name, "").strip():
            return properties[name].strip()
    return ""


def principal(properties: Mapping[str, str]) -> str:
    """Who the broker sees, when the settings tell it: SASL's user, or the client certificate's subject.

    The broker maps a certificate to a principal with its own ``ssl.principal.mapping.rules``, so for
    mutual TLS this names the certificate, not a ``User:`` principal it cannot know.
    """
    protocol = properties.get("security.protocol", "").upper()
    user = _get(properties, "sasl.username")
    if protocol.startswith("SASL") and user:
        return f"User:{user}"
    certificate = _get(properties, "ssl.certificate.location")
    if protocol == "SSL" and certificate:
        subject = certificate_subject(certificate)
        return f'the client certificate "{subject}"' if subject else ""
    return ""


_RDN_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
}


def certificate_subject(path: str) -> str:
    """A PEM certificate's subject as Kafka writes a DN (``CN=pipeline,O=example``); "" if unreadable."""
    try:
        decoded = ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]  # the stdlib's only decoder
    except Exception:  # noqa: BLE001 - naming the certificate is a courtesy; check_tls_files reports bad files
        return ""
    parts = [f"{_RDN_NAMES.get(name, name)}={value}" for rdn in decoded.get("subject", ()) for name, value in rdn]
    return ",".join(reversed(parts))


def authentication_failed(properties: Mapping[str, str], detail: str = "") -> AuthenticationFailed:
    """The one line that names who failed to log in, how, and what to check."""
    user = _get(properties, "sasl.username") or "(none)"
    mechanism = _get(properties, "sasl.mechanism", "sasl.mechanisms").upper() or "GSSAPI"
    return AuthenticationFailed(
        f'authentication failed for user "{user}" (SASL {mechanism}): '
        f"check {variable_name('sasl.username')} / {variable_name('sasl.password')}"
        + (f" ({detail})" if detail else "")
    )


def closes_before_answering(servers: str) -> SecurityProtocolMismatch:
    """A broker that closes every connection before its first reply: most likely a TLS or SASL listener."""
    return SecurityProtocolMismatch(
        f"cannot reach Kafka at {servers}: the broker closes every connection before answering "
        "(does it expect TLS or SASL? check KAFKA_SECURITY_PROTOCOL)"
    )


def tls_failed(properties: Mapping[str, str], servers: str, detail: str) -> TlsFailed:
    """The one line that names the TLS failure and the settings to check for that kind of failure."""
    text = detail.lower()
    if "verify failed" in text or "unknown ca" in text or "self-signed" in text or "issuer" in text:
        check = [variable_name("ssl.ca.location")]
        if "hostname" in text or "ip address mismatch" in text:
            check.append(variable_name("ssl.endpoint.identification.algorithm"))
    else:
        check = [variable_name(p) for p in ("ssl.certificate.location", "ssl.key.location", "ssl.ca.location")]
    return TlsFailed(f"TLS handshake with {servers} failed ({detail}): check {' / '.join(check)}")


def check_tls_files(properties: Mapping[str, str]) -> None:
    """Read the CA, certificate and key files now, so a bad path or key password is a setting's error at start.

    Both clients would otherwise report it late and vaguely (a traceback, or an endless "unreachable").
    """
    ca = _get(properties, "ssl.ca.location")
    cert = _get(properties, "ssl.certificate.location")
    key = _get(properties, "ssl.key.location")
    password = properties.get("ssl.key.password", "")
    if not (ca or cert or key):
        return
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca and ca.lower() != "probe":
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as error:
            raise InvalidConfiguration(
                f"{variable_name('ssl.ca.location')}: cannot read {ca}: {_reason(error)}"
            ) from None
    if cert or key:
        try:
            context.load_cert_chain(cert or key, key or None, password=password.encode)
        except (OSError, ssl.SSLError) as error:
            names = [variable_name("ssl.certificate.location"), variable_name("ssl.key.location")]
            if password or "decrypt" in str(error).lower() or "bad password" in str(error).lower():
                names.append(variable_name("ssl.key.password"))
            raise InvalidConfiguration(
                f"{' / '.join(names)}: cannot read the client certificate or decrypt its key ({_reason(error)})"
            ) from None


def _reason(error: BaseException) -> str:
    if "PEM lib" in str(error):
        return "not a PEM file, or the key password is wrong"
    if isinstance(error, ssl.SSLError) and error.reason:
        return str(error.reason).replace("_", " ").lower()
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)
