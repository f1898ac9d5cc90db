"""Genuine gateway messages, made with the gateways' own client libraries.

- Alipay notifications: python-alipay-sdk signs the sorted form (without
  sign and sign_type) with "Alipay's" private key, and its own `verify`
  checks the result.
- Alipay server answers: the official alipay-sdk-python signs the response
  object's text; python-alipay-sdk's sync-response verifier checks it.
- WeChat Pay: wechatpayv3 signs (`rsa_sign`) and, for the callback, its
  merchant-side `callback()` verifies and decrypts what we built, so a
  message the library refuses is reported as such.
"""
import base64
import json
import os
import time
import uuid
from urllib.parse import parse_qsl

from alipay import AliPay
from alipay.aop.api.util.SignatureUtils import sign_with_rsa2
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from wechatpayv3 import WeChatPay, WeChatPayType
from wechatpayv3.utils import load_private_key, rsa_sign


class AlipaySigner:
    def __init__(self, keys, app_id):
        self.keys = keys
        self.app_id = app_id
        # python-alipay-sdk is a merchant library: its "app private key" slot
        # is whatever key it signs with. Here it plays Alipay, so it holds
        # Alipay's private key (or the wrong one, for forgeries).
        self.as_alipay = {
            name: AliPay(
                appid=app_id,
                app_private_key_string=keys[name]["private"],
                alipay_public_key_string=keys["alipay"]["public"],
            )
            for name in ("alipay", "wrong")
        }

    def notification(self, params, key="alipay"):
        """A form body as Alipay posts it; `library_verdict` is the library's
        own verification of it with Alipay's public key."""
        data = {k: v for k, v in params.items() if v != ""}
        body = self.as_alipay[key].sign_data(dict(data)) + "&sign_type=RSA2"
        fields = dict(parse_qsl(body, keep_blank_values=True))
        sign = fields.pop("sign")
        verdict = self.as_alipay["alipay"].verify(fields, sign)
        return {"body": body, "library_verdict": bool(verdict)}

    def response(self, response_key, obj, corrupt=False):
        """An API answer signed over the response object's exact text. The
        spacing differs from compact JSON on purpose: Kami must verify the
        bytes it received, not a re-serialisation."""
        text = json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))
        key_body = "".join(
            line
            for line in self.keys["alipay"]["private"].splitlines()
            if "-----" not in line
        )
        sign = sign_with_rsa2(key_body, text, "utf-8")
        if corrupt:
            sign = sign[:-8] + ("A" * 8 if not sign.endswith("A" * 8) else "B" * 8)
        body = '{"%s": %s, "sign": "%s"}' % (response_key, text, sign)
        if not corrupt:
            # The merchant library must accept what we send as genuine.
            self.as_alipay["alipay"]._verify_and_return_sync_response(body, response_key)
        return body


class WechatSigner:
    def __init__(self, keys, cfg):
        self.keys = keys
        self.cfg = cfg
        self.signing = {
            name: load_private_key(keys[name]["private"]) for name in ("platform", "wrong")
        }
        # The merchant's own view, for checking callbacks as a merchant would.
        self.merchant = WeChatPay(
            wechatpay_type=WeChatPayType.NATIVE,
            mchid=cfg["mchid"],
            private_key=keys["merchant"]["private"],
            cert_serial_no=cfg["merchant_serial"],
            appid=cfg["appid"],
            apiv3_key=cfg["apiv3_key"],
            public_key=keys["platform"]["public"],
            public_key_id=cfg["platform_serial"],
        )

    def headers(self, body, key="platform", timestamp=None, signature=None, serial=None):
        ts = str(int(time.time()) if timestamp is None else timestamp)
        nonce = uuid.uuid4().hex.upper()
        sig = signature or rsa_sign(self.signing[key], "%s\n%s\n%s\n" % (ts, nonce, body))
        return {
            "Wechatpay-Timestamp": ts,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": sig,
            "Wechatpay-Serial": serial or self.cfg["platform_serial"],
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        }

    def callback(self, transaction, event_type="TRANSACTION.SUCCESS", **header_args):
        nonce = base64.b32encode(os.urandom(10)).decode()[:12]
        # WeChat Pay names the resource's type in its associated data.
        aad = "refund" if event_type.startswith("REFUND.") else "transaction"
        ciphertext = AESGCM(self.cfg["apiv3_key"].encode()).encrypt(
            nonce.encode(), json.dumps(transaction, ensure_ascii=False).encode(), aad.encode()
        )
        body = json.dumps(
            {
                "id": str(uuid.uuid4()),
                "create_time": time.strftime("%Y-%m-%dT%H:%M:%S+08:00"),
                "resource_type": "encrypt-resource",
                "event_type": event_type,
                "summary": "支付成功",
                "resource": {
                    "original_type": aad,
                    "algorithm": "AEAD_AES_256_GCM",
                    "ciphertext": base64.b64encode(ciphertext).decode(),
                    "associated_data": aad,
                    "nonce": nonce,
                },
            },
            ensure_ascii=False,
        )
        headers = self.headers(body, **header_args)
        verdict = None
        # wechatpayv3 downloads certificates for an unknown serial; only ask
        # it about messages that name the configured public key id.
        if headers["Wechatpay-Serial"] == self.cfg["platform_serial"]:
            verdict = self.merchant.callback(headers, body) is not None
        return {"headers": headers, "body": body, "library_verdict": verdict}
