"""Who made a bundle: Ed25519 signatures over its manifest (``cryptography``).

The SHA-256 digests in ``bundle.json`` say that no file changed since the manifest was
written; anyone can write a new manifest, so they say nothing about who wrote it. A
signature says that: ``bundle.sig`` holds an Ed25519 signature of the exact bytes of
``bundle.json`` (which lists every file's digest), made with the exporting site's private
key. ``predict --trust KEYS`` refuses a bundle that is unsigned, signed by a key not among
``KEYS``, or whose manifest changed after signing::

    python -m benchmark keys new keys/              # keys/signing.key (owner-only) and keys/signing.pub
    python -m benchmark export RUN --sign keys/signing.key
    python -m benchmark predict BUNDLE --data NEW.yaml --trust site-a.pub
    python -m benchmark keys sign BUNDLE --key keys/signing.key      # sign a bundle exported before
    python -m benchmark keys verify BUNDLE --trust site-a.pub

Keys are PEM files (PKCS#8 private keys without a passphrase, SubjectPublicKeyInfo public
keys), the same as ``openssl genpkey -algorithm ed25519 -out signing.key`` and
``openssl pkey -in signing.key -pubout -out signing.pub`` make. A key's fingerprint is the
first 16 hex digits of the SHA-256 of its raw 32 bytes. The public key is what the
receiving site gets, over a channel it trusts (not inside the bundle).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
from pathlib import Path

from benchmark.errors import UserError

SIG_FORMAT = "aff-benchmark-signature"


def fingerprint(public_key) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def new_keys(folder: Path, name: str = "signing") -> tuple[Path, Path]:
    """Write ``folder/<name>.key`` (private, mode 0600) and ``folder/<name>.pub``; refuse to overwrite."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path, pub_path = folder / f"{name}.key", folder / f"{name}.pub"
    for p in (key_path, pub_path):
        if p.exists():
            raise UserError(f"{p} exists; choose another --name or folder (keys are never overwritten)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_path, pub_path


def load_private(path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not an unencrypted PEM private key"
        raise UserError(f"--sign {path}: cannot read the key ({why}); make one with `python -m benchmark keys new DIR`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"--sign {path}: not an Ed25519 key; make one with `python -m benchmark keys new DIR`")
    return key


def load_trusted(specs: list[str]) -> dict[str, object]:
    """Fingerprint -> public key for every ``--trust`` file, or every *.pub / *.pem file of a ``--trust`` folder."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys: dict[str, object] = {}
    for spec in specs:
        p = Path(spec).expanduser()
        files = sorted(q for q in p.iterdir() if q.suffix in (".pub", ".pem")) if p.is_dir() else [p]
        if not files:
            raise UserError(f"--trust {spec}: the folder holds no .pub or .pem public key")
        for f in files:
            try:
                key = serialization.load_pem_public_key(f.read_bytes())
            except (OSError, ValueError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else "not a PEM public key"
                raise UserError(f"--trust {f}: cannot read the key ({why}); give the exporting site's .pub file") from None
            if not isinstance(key, Ed25519PublicKey):
                raise UserError(f"--trust {f}: not an Ed25519 public key")
            keys[fingerprint(key)] = key
    return keys


def signature_bytes(manifest: bytes, key) -> bytes:
    """The ``bundle.sig`` content for the manifest bytes ``manifest``, signed with private ``key``."""
    sig = {"format": SIG_FORMAT, "algorithm": "ed25519", "key": fingerprint(key.public_key()),
           "signature": base64.b64encode(key.sign(manifest)).decode("ascii")}
    return (json.dumps(sig, indent=1) + "\n").encode()


def sign_bundle(bundle: Path, key_path: Path) -> str:
    """Sign ``bundle`` (its bundle.json as it is) with the key at ``key_path``; returns the key's fingerprint."""
    from benchmark.export.bundle_files import MANIFEST, SIGNATURE, read_bundle

    key = load_private(key_path)
    _, _, manifest = read_bundle(Path(bundle))   # every file checked first: sign only an intact bundle
    tmp = Path(bundle) / f".{SIGNATURE}.tmp"
    tmp.write_bytes(signature_bytes(manifest, key))
    os.replace(tmp, Path(bundle) / SIGNATURE)
    assert (Path(bundle) / MANIFEST).read_bytes() == manifest
    return fingerprint(key.public_key())


def verify(bundle: Path, manifest: bytes, sig: bytes | None, trusted: dict[str, object]) -> str:
    """The fingerprint of the trusted key that signed ``manifest``; UserError when none did."""
    from cryptography.exceptions import InvalidSignature

    from benchmark.export.safe_json import loads
    from benchmark.export.limits import BundleFormatError

    if sig is None:
        raise UserError(f"{bundle}: the bundle is not signed (no bundle.sig) and --trust asks for a signature; ask "
                        "the exporting site to sign it (export --sign, or keys sign)")
    try:
        info = loads(sig, "bundle.sig", max_depth=2)
        raw = base64.b64decode(info["signature"], validate=True)
        key_id = str(info["key"])[:64]
    except (BundleFormatError, KeyError, TypeError, ValueError):
        raise UserError(f"{bundle}: bundle.sig is not a signature file of this harness; the bundle is refused") from None
    key = trusted.get(key_id)
    if key is None:
        raise UserError(f"{bundle}: signed by key {key_id}, which is not among the --trust keys "
                        f"({', '.join(sorted(trusted)) or 'none'}); the bundle is refused")
    try:
        key.verify(raw, manifest)
    except InvalidSignature:
        raise UserError(f"{bundle}: the signature does not match bundle.json (the manifest changed after signing, "
                        f"or the signature is forged); the bundle is refused") from None
    return key_id


# ---- CLI ------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    new = sub.add_parser("new", help="make a signing key pair in DIR (DIR/NAME.key, owner-only; DIR/NAME.pub)")
    new.add_argument("folder", metavar="DIR")
    new.add_argument("--name", default="signing")
    sign = sub.add_parser("sign", help="sign an exported bundle (writes BUNDLE/bundle.sig)")
    sign.add_argument("bundle")
    sign.add_argument("--key", required=True, metavar="KEY", help="private key file (keys new)")
    ver = sub.add_parser("verify", help="check a bundle's files and that a trusted key signed it")
    ver.add_argument("bundle")
    ver.add_argument("--trust", action="append", required=True, metavar="KEYS",
                     help="a public key file, or a folder of them (repeatable)")


def command(args: argparse.Namespace) -> int:
    if args.action == "new":
        key, pub = new_keys(Path(args.folder), args.name)
        print(f"private key: {key} (keep it at the exporting site; owner-only)\npublic key:  {pub} "
              f"(give it to the sites that run your bundles)\nfingerprint: {fingerprint(load_private(key).public_key())}")
        return 0
    if args.action == "sign":
        print(f"{args.bundle}: signed with key {sign_bundle(Path(args.bundle), Path(args.key))}")
        return 0
    from benchmark.export.bundle_files import SIGNATURE, read_bundle

    _, files, manifest = read_bundle(Path(args.bundle))
    key_id = verify(Path(args.bundle), manifest, files.get(SIGNATURE), load_trusted(args.trust))
    print(f"{args.bundle}: every file intact; signed by trusted key {key_id}")
    return 0
