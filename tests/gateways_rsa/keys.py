"""Throwaway RSA key pairs for one test run, written where kami.toml points.

Formats are mixed on purpose so Kami's loaders see every shape API.md allows:
PKCS#8 and PKCS#1 private keys, SubjectPublicKeyInfo public keys.
"""
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

PKCS8 = serialization.PrivateFormat.PKCS8
PKCS1 = serialization.PrivateFormat.TraditionalOpenSSL  # "BEGIN RSA PRIVATE KEY"

# stem -> private key format
PAIRS = {
    "app": PKCS1,          # Alipay app key: Kami signs requests (PKCS#1 as the Alipay key tool writes it)
    "alipay": PKCS1,       # "Alipay's" key: the official SDK's signer wants PKCS#1
    "merchant": PKCS8,     # WeChat Pay merchant key, PKCS#8 like apiclient_key.pem
    "platform": PKCS8,     # WeChat Pay platform key
    "wrong": PKCS8,        # signs forgeries
}


def generate(directory):
    """Writes <stem>_private.pem / <stem>_public.pem and returns the PEM texts."""
    out = {}
    for stem, fmt in PAIRS.items():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM, fmt, serialization.NoEncryption()
        ).decode()
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        ).decode()
        for kind, text in (("private", private), ("public", public)):
            path = os.path.join(directory, f"{stem}_{kind}.pem")
            with open(path, "w") as f:
                f.write(text)
        out[stem] = {"private": private, "public": public, "key": key}
    return out
