"""RFC 3161 trusted timestamps: the request a recorder sends and the check an auditor runs.

A token anchors one signed record outside the server: its message imprint is the record digest
(SHA-256 of the record's canonical body, `records.record_digest`), so a record rewritten later,
even with the server's own key, has a digest no old token carries, and a new token carries the
time of the rewrite. The ASN.1 (TimeStampReq / TimeStampResp / TSTInfo / CMS SignedData) is read
and written with asn1crypto; signatures and certificates are checked with `cryptography`.

What `check_token` proves, in order: the token is CMS SignedData over a TSTInfo; the TSTInfo's
imprint is the expected digest; the signed attributes carry the content type and the digest of
the TSTInfo, and name the signer certificate (ESS signing-certificate); the signature over the
signed attributes holds with that certificate's key; the certificate has the critical
timeStamping purpose, was valid at genTime and chains to one of the trusted TSA certificates
(the TSA certificate itself or the CA that issued it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asn1crypto import cms, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from finrtc.errors import ArchiveError

# Objects beside the records; `token_name("records/000003.json") == "timestamps/records/000003.tst"`.
TIMESTAMPS_DIR = "timestamps"
TOKEN_SUFFIX = ".tst"
IMPRINT_ALGORITHM = "sha256"
# A chain from the signer to a trusted certificate longer than this is not followed.
MAX_CHAIN = 5

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class TimestampError(ArchiveError):
    """A time-stamp response or token does not hold; `code` names the finding."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TokenInfo:
    gen_time: dt.datetime
    serial: int
    policy: str
    tsa: str
    accuracy_s: float | None
    nonce: int | None


def token_name(record_name: str) -> str:
    stem = record_name[:-5] if record_name.endswith(".json") else record_name
    return f"{TIMESTAMPS_DIR}/{stem}{TOKEN_SUFFIX}"


def new_nonce() -> int:
    return secrets.randbits(64)


def load_tsa_certificates(path: Path) -> list[x509.Certificate]:
    """The trusted TSA certificate(s): PEM (one or several) or one DER certificate."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ArchiveError(
            f"cannot read the TSA certificate file {path}: {error.strerror}"
        ) from None
    try:
        if b"-----BEGIN" in data:
            certificates = x509.load_pem_x509_certificates(data)
        else:
            certificates = [x509.load_der_x509_certificate(data)]
    except ValueError as error:
        raise ArchiveError(
            f"{path} holds no X.509 certificate (PEM or DER) of the TSA or its CA: {error}"
        ) from None
    return certificates


def build_request(digest: bytes, policy_oid: str | None = None, nonce: int | None = None) -> bytes:
    """DER TimeStampReq over a SHA-256 digest, asking for the signer certificate in the token."""
    if len(digest) != hashlib.sha256().digest_size:
        raise ArchiveError(f"a record digest is 32 bytes of SHA-256, got {len(digest)} bytes")
    request: dict[str, Any] = {
        "version": "v1",
        "message_imprint": {
            "hash_algorithm": {"algorithm": IMPRINT_ALGORITHM},
            "hashed_message": digest,
        },
        "cert_req": True,
    }
    if policy_oid:
        request["req_policy"] = policy_oid
    if nonce is not None:
        request["nonce"] = nonce
    return bytes(tsp.TimeStampReq(request).dump())


def token_from_response(data: bytes, digest: bytes, nonce: int | None,
                        policy_oid: str | None = None) -> bytes:
    """The DER TimeStampToken of a granted response that answers this request."""
    try:
        response = tsp.TimeStampResp.load(data)
        status = response["status"]["status"].native
    except (ValueError, TypeError, KeyError) as error:
        raise TimestampError("response_unreadable",
                             f"the TSA answered something that is not a TimeStampResp: {error}"
                             ) from None
    if status not in ("granted", "granted_with_mods"):
        text = response["status"]["status_string"].native
        failure = response["status"]["fail_info"].native
        raise TimestampError("response_rejected",
                             f"the TSA refused the request: {status} {text or ''} "
                             f"{sorted(failure) if failure else ''}".strip())
    token = response["time_stamp_token"]
    if not isinstance(token, cms.ContentInfo):
        raise TimestampError("response_unreadable", "a granted response without a token")
    tst = _tst_info(token)
    if nonce is not None and tst["nonce"].native != nonce:
        raise TimestampError("nonce_mismatch",
                             "the token's nonce is not the request's (a replayed response?)")
    _check_imprint(tst, digest)
    if policy_oid and tst["policy"].dotted != policy_oid:
        raise TimestampError("policy_mismatch",
                             f"the TSA used policy {tst['policy'].dotted}, not {policy_oid}")
    return bytes(token.dump())


def _tst_info(token: cms.ContentInfo) -> tsp.TSTInfo:
    if token["content_type"].native != "signed_data":
        raise TimestampError("token_malformed", "the token is not CMS SignedData")
    signed = token["content"]
    encap = signed["encap_content_info"]
    if encap["content_type"].native != "tst_info":
        raise TimestampError("token_malformed", "the token's content is not a TSTInfo")
    parsed = encap["content"].parsed
    if not isinstance(parsed, tsp.TSTInfo):
        raise TimestampError("token_malformed", "the token's TSTInfo cannot be parsed")
    return parsed


def _check_imprint(tst: tsp.TSTInfo, digest: bytes) -> None:
    imprint = tst["message_imprint"]
    algorithm = imprint["hash_algorithm"]["algorithm"].native
    if algorithm != IMPRINT_ALGORITHM or imprint["hashed_message"].native != digest:
        raise TimestampError(
            "imprint_mismatch",
            f"the token stamps {algorithm}:{imprint['hashed_message'].native.hex()}, not this "
            f"record's digest {digest.hex()} (a token of another record, or the record changed)",
        )


def check_token(token_der: bytes, digest: bytes, trusted: Sequence[x509.Certificate],
                policy_oid: str | None = None) -> TokenInfo:
    """Verify a stored token for `digest` against the trusted TSA certificate(s)."""
    try:
        return _check_token(token_der, digest, trusted, policy_oid)
    except TimestampError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        # asn1crypto parses lazily: a malformed field surfaces where it is first read.
        raise TimestampError("token_malformed", f"the token is not valid DER: {error}") from None


def _check_token(token_der: bytes, digest: bytes, trusted: Sequence[x509.Certificate],
                 policy_oid: str | None) -> TokenInfo:
    token = cms.ContentInfo.load(token_der)
    tst = _tst_info(token)
    _check_imprint(tst, digest)
    signed: cms.SignedData = token["content"]
    if len(signed["signer_infos"]) != 1:
        raise TimestampError("token_malformed", "a time-stamp token has exactly one signer")
    signer_info: cms.SignerInfo = signed["signer_infos"][0]
    # The signed bytes, taken before the attributes are parsed: asn1crypto re-encodes a value
    # whose children were read, which is slow (and must give the same bytes, but need not).
    signed_attributes_der = cms.CMSAttributes(contents=signer_info["signed_attrs"].contents).dump()
    attributes = _signed_attributes(signer_info)
    digest_name = signer_info["digest_algorithm"]["algorithm"].native
    hash_type = _HASHES.get(str(digest_name))
    if hash_type is None or digest_name == "sha1":
        raise TimestampError("token_weak_digest", f"signed with unsupported digest {digest_name}")
    econtent = encap_bytes(signed)
    content_type = attributes.get("content_type")
    if content_type is None or content_type.native != "tst_info":
        raise TimestampError("token_attributes", "the signed content-type attribute is not TSTInfo")
    message_digest = attributes.get("message_digest")
    if message_digest is None or message_digest.native != _hash(hash_type, econtent):
        raise TimestampError("token_content_altered",
                             "the TSTInfo does not match the signed message-digest attribute")
    gen_time = tst["gen_time"].native
    if not isinstance(gen_time, dt.datetime):
        raise TimestampError("token_malformed", "the TSTInfo has no genTime")
    candidates = _embedded_certificates(signed)
    signer = _find_signer(signer_info, candidates + list(trusted))
    _check_ess(attributes, signer)
    _check_signature(signer_info, signed_attributes_der, signer, hash_type)
    _check_purpose(signer)
    _check_chain(signer, candidates, trusted, gen_time)
    policy = str(tst["policy"].dotted)
    if policy_oid and policy != policy_oid:
        raise TimestampError("policy_mismatch",
                             f"the token was issued under policy {policy}, not {policy_oid}")
    accuracy = tst["accuracy"]
    accuracy_s: float | None = None
    if accuracy.native is not None:
        accuracy_s = float(accuracy["seconds"].native or 0) + float(
            accuracy["millis"].native or 0) / 1e3 + float(accuracy["micros"].native or 0) / 1e6
    return TokenInfo(
        gen_time=gen_time.astimezone(dt.UTC),
        serial=int(tst["serial_number"].native),
        policy=policy,
        tsa=signer.subject.rfc4514_string(),
        accuracy_s=accuracy_s,
        nonce=tst["nonce"].native,
    )


def encap_bytes(signed: cms.SignedData) -> bytes:
    """The DER octets of the encapsulated TSTInfo, as the message-digest attribute covers them."""
    content = signed["encap_content_info"]["content"]
    octets: bytes = content.contents
    return octets


def _hash(hash_type: type[hashes.HashAlgorithm], data: bytes) -> bytes:
    context = hashes.Hash(hash_type())
    context.update(data)
    return context.finalize()


def _signed_attributes(signer_info: cms.SignerInfo) -> dict[str, Any]:
    attrs = signer_info["signed_attrs"]
    if len(attrs) == 0:
        raise TimestampError("token_attributes", "the token carries no signed attributes")
    found: dict[str, Any] = {}
    for attribute in attrs:
        name = attribute["type"].native
        values = attribute["values"]
        if name in found or len(values) != 1:
            raise TimestampError("token_attributes", f"signed attribute {name} is not single")
        found[str(name)] = values[0]
    return found


def _embedded_certificates(signed: cms.SignedData) -> list[x509.Certificate]:
    found = []
    for choice in signed["certificates"] or []:
        if choice.name == "certificate":
            found.append(x509.load_der_x509_certificate(choice.chosen.dump()))
    return found


def _find_signer(signer_info: cms.SignerInfo, candidates: Sequence[x509.Certificate]
                 ) -> x509.Certificate:
    sid = signer_info["sid"]
    for certificate in candidates:
        if sid.name == "issuer_and_serial_number":
            chosen = sid.chosen
            if certificate.serial_number != chosen["serial_number"].native:
                continue
            # Same serial: compare issuers, as DER first, else by X.500 name matching rules.
            if certificate.issuer.public_bytes() == chosen["issuer"].dump() or (
                asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER)).issuer
                == chosen["issuer"]
            ):
                return certificate
        else:
            parsed = asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER))
            if parsed.key_identifier is not None and parsed.key_identifier == sid.chosen.native:
                return certificate
    raise TimestampError("signer_unknown",
                         "the token's signer certificate is neither in the token nor the trusted "
                         "TSA certificate")


def _check_ess(attributes: dict[str, Any], signer: x509.Certificate) -> None:
    der = signer.public_bytes(Encoding.DER)
    v2 = attributes.get("signing_certificate_v2")
    if v2 is not None:
        first = v2["certs"][0]
        algorithm = str(first["hash_algorithm"]["algorithm"].native)
        hash_type = _HASHES.get(algorithm)
        if hash_type is None or first["cert_hash"].native != _hash(hash_type, der):
            raise TimestampError("signer_mismatch",
                                 "the signed ESS signing-certificate-v2 names another certificate")
        return
    v1 = attributes.get("signing_certificate")
    if v1 is not None:
        if v1["certs"][0]["cert_hash"].native != hashlib.sha1(der).digest():
            raise TimestampError("signer_mismatch",
                                 "the signed ESS signing-certificate names another certificate")
        return
    raise TimestampError("token_attributes",
                         "the token does not name its signer certificate (no ESS "
                         "signing-certificate attribute, RFC 3161 section 2.4.2)")


def _check_signature(signer_info: cms.SignerInfo, data: bytes, signer: x509.Certificate,
                     hash_type: type[hashes.HashAlgorithm]) -> None:
    # `data`: the DER of the signed attributes as a SET OF, not their [0] tagging (RFC 5652 5.4).
    signature = signer_info["signature"].native
    algorithm = signer_info["signature_algorithm"]
    kind = algorithm.signature_algo
    key = signer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and kind == "rsassa_pkcs1v15":
            key.verify(signature, data, padding.PKCS1v15(), _signature_hash(algorithm, hash_type)())
        elif isinstance(key, rsa.RSAPublicKey) and kind == "rsassa_pss":
            params = algorithm["parameters"]
            pss_hash = _HASHES[str(params["hash_algorithm"]["algorithm"].native)]
            mgf_hash = _HASHES[str(params["mask_gen_algorithm"]["parameters"]["algorithm"].native)]
            key.verify(signature, data,
                       padding.PSS(padding.MGF1(mgf_hash()), int(params["salt_length"].native)),
                       pss_hash())
        elif isinstance(key, ec.EllipticCurvePublicKey) and kind == "ecdsa":
            key.verify(signature, data, ec.ECDSA(_signature_hash(algorithm, hash_type)()))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey) and kind in (
            "ed25519", "ed448"
        ):
            key.verify(signature, data)
        else:
            raise TimestampError("token_signature_unsupported",
                                 f"signature algorithm {kind} with a {type(key).__name__}")
    except InvalidSignature:
        raise TimestampError("token_signature_invalid",
                             "the TSA signature over the token does not hold (altered token or "
                             "another key)") from None
    except (KeyError, ValueError) as error:
        raise TimestampError("token_signature_unsupported",
                             f"cannot check the token's signature: {error}") from None


def _signature_hash(algorithm: Any, fallback: type[hashes.HashAlgorithm]
                    ) -> type[hashes.HashAlgorithm]:
    try:
        return _HASHES[str(algorithm.hash_algo)]
    except (ValueError, KeyError):
        # Plain rsaEncryption / ecPublicKey identifiers leave the hash to digest_algorithm.
        return fallback


def _check_purpose(signer: x509.Certificate) -> None:
    try:
        extension = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        raise TimestampError("signer_not_a_tsa",
                             f"{signer.subject.rfc4514_string()} has no ExtendedKeyUsage "
                             "timeStamping: it is not a time-stamping certificate") from None
    if ExtendedKeyUsageOID.TIME_STAMPING not in extension.value or not extension.critical:
        raise TimestampError("signer_not_a_tsa",
                             f"{signer.subject.rfc4514_string()} lacks the critical "
                             "timeStamping purpose (RFC 3161 section 2.3)")


def _valid_at(certificate: x509.Certificate, when: dt.datetime) -> bool:
    return certificate.not_valid_before_utc <= when <= certificate.not_valid_after_utc


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_chain(signer: x509.Certificate, embedded: Sequence[x509.Certificate],
                 trusted: Sequence[x509.Certificate], when: dt.datetime) -> None:
    if not _valid_at(signer, when):
        raise TimestampError("signer_expired",
                             f"the TSA certificate was not valid at the token's time {when}")
    anchors = {certificate.fingerprint(hashes.SHA256()) for certificate in trusted}
    current = signer
    for _depth in range(MAX_CHAIN):
        if current.fingerprint(hashes.SHA256()) in anchors:
            return
        issuer = next(
            (parent for parent in trusted if _is_ca(parent) and _issued_by(current, parent)), None
        )
        if issuer is not None:
            if not _valid_at(issuer, when):
                raise TimestampError("signer_expired",
                                     f"{issuer.subject.rfc4514_string()} was not valid at {when}")
            return
        intermediate = next(
            (parent for parent in embedded
             if parent != current and _is_ca(parent) and _valid_at(parent, when)
             and _issued_by(current, parent)), None,
        )
        if intermediate is None:
            break
        current = intermediate
    raise TimestampError("signer_untrusted",
                         f"the token is signed by {signer.subject.rfc4514_string()}, which does "
                         "not chain to the given TSA certificate (a token from another TSA)")


def describe(info: TokenInfo) -> dict[str, Any]:
    return {
        "gen_time": info.gen_time.isoformat(timespec="milliseconds"),
        "serial": info.serial,
        "policy": info.policy,
        "tsa": info.tsa,
        "accuracy_s": info.accuracy_s,
    }

