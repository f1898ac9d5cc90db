"""A fake Alipay + WeChat Pay on 127.0.0.1 for Kami's RSA channel tests.

    python fake_gateway.py KEY_DIR

Writes throwaway keys into KEY_DIR, listens on a free loopback port and
prints one JSON line: the port and the `[channels.alipay]` /
`[channels.wechatpay]` settings that point Kami at it (key files relative
to KEY_DIR). It then serves until killed:

- POST /gateway.do                              Alipay trade.precreate / trade.query
- POST /v3/pay/transactions/native              WeChat Pay Native order
- GET  /v3/pay/transactions/out-trade-no/{no}   WeChat Pay query

Every request from Kami is verified with the gateway libraries and the app /
merchant public key before it is answered; a request that fails is answered
with the gateway's own error and noted in GET /__test__/log. Answers are
signed like the real gateways sign them. Test controls (JSON in, JSON out):

- POST /__test__/alipay/notify    {"params": {...}, "key": "alipay"|"wrong"}
- POST /__test__/wechatpay/notify {"transaction": {...}, "key", "timestamp", "signature", "serial",
                                   "event_type"} (a REFUND.* event_type: "transaction" is the refund)
- POST /__test__/alipay/trade     {"out_trade_no", "trade_status", "trade_no"}
- POST /__test__/wechatpay/trade  {"out_trade_no", "trade_state", "transaction_id"}
- POST /__test__/corrupt          {"gateway": "alipay"|"wechatpay"}: break the next answer's signature
- GET  /__test__/log
"""
import json
import os
import re
import secrets
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from alipay.aop.api.util.SignatureUtils import get_sign_content, verify_with_rsa
from wechatpayv3.utils import load_public_key, rsa_verify

import keys as keygen
from signer import AlipaySigner, WechatSigner

BEIJING = timezone(timedelta(hours=8))
ALIPAY_METHODS = ("alipay.trade.precreate", "alipay.trade.query")
# The buyer's browser brings these to the gateway, which shows its cashier.
ALIPAY_CASHIER_METHODS = {"alipay.trade.page.pay": "FAST_INSTANT_TRADE_PAY",
                          "alipay.trade.wap.pay": "QUICK_WAP_WAY"}


class Rejected(Exception):
    pass


class State:
    def __init__(self, key_dir):
        self.lock = threading.Lock()
        self.keys = keygen.generate(key_dir)
        self.alipay_cfg = {
            "app_id": "2021" + str(secrets.randbelow(10**12)).zfill(12),
            "seller_id": "2088" + str(secrets.randbelow(10**12)).zfill(12),
            "app_private_key_file": "app_private.pem",
            "alipay_public_key_file": "alipay_public.pem",
        }
        self.wechat_cfg = {
            "mchid": "19" + str(secrets.randbelow(10**8)).zfill(8),
            "appid": "wx" + secrets.token_hex(8),
            "apiv3_key": secrets.token_hex(16),
            "merchant_serial": secrets.token_hex(20).upper(),
            "merchant_private_key_file": "merchant_private.pem",
            "platform_serial": "PUB_KEY_ID_" + secrets.token_hex(14).upper(),
            "platform_public_key_file": "platform_public.pem",
        }
        self.alipay = AlipaySigner(self.keys, self.alipay_cfg["app_id"])
        self.wechat = WechatSigner(self.keys, self.wechat_cfg)
        self.merchant_public = load_public_key(self.keys["merchant"]["public"])
        self.alipay_trades = {}
        self.wechat_trades = {}
        self.corrupt = set()
        self.log = []

    def note(self, gateway, what, verified, reason=""):
        with self.lock:
            self.log.append({"gateway": gateway, "what": what, "verified": verified, "reason": reason})

    def take_corrupt(self, gateway):
        with self.lock:
            if gateway in self.corrupt:
                self.corrupt.discard(gateway)
                return True
            return False


def check_alipay_request(state, params):
    """Alipay's rule for requests: every parameter but sign, empty ones
    left out, sorted, raw values; verified with the app's public key by the
    official SDK."""
    sign = params.pop("sign", "")
    content = get_sign_content({k: v for k, v in params.items() if v != ""})
    try:
        verify_with_rsa(state.keys["app"]["public"], content.encode("utf-8"), sign)
    except Exception as e:
        raise Rejected(f"isv.invalid-signature: {e!r}")
    expect = {"app_id": state.alipay_cfg["app_id"], "format": "JSON", "charset": "utf-8",
              "sign_type": "RSA2", "version": "1.0"}
    for k, v in expect.items():
        # format may be left out (Alipay defaults it); the rest are required.
        if params.get(k, v if k == "format" else None) != v:
            raise Rejected(f"{k} is {params.get(k)!r}, expected {v!r}")
    sent = datetime.strptime(params.get("timestamp", ""), "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
    if abs((datetime.now(BEIJING) - sent).total_seconds()) > 600:
        raise Rejected("isv.invalid-timestamp: not Beijing time now")
    if params.get("method") not in ALIPAY_METHODS + tuple(ALIPAY_CASHIER_METHODS):
        raise Rejected(f"unknown method {params.get('method')!r}")
    return json.loads(params["biz_content"])


def alipay_answer(state, method, biz):
    if method == "alipay.trade.precreate":
        if not re.fullmatch(r"\d+\.\d{2}", biz.get("total_amount", "")):
            raise Rejected(f"total_amount {biz.get('total_amount')!r} is not yuan with 2 decimals")
        if not biz.get("subject") or not biz.get("out_trade_no"):
            raise Rejected("subject and out_trade_no are required")
        with state.lock:
            state.alipay_trades[biz["out_trade_no"]] = {
                "total_amount": biz["total_amount"], "trade_status": "WAIT_BUYER_PAY",
                "trade_no": "2026" + secrets.token_hex(12)}
        return {"code": "10000", "msg": "Success", "out_trade_no": biz["out_trade_no"],
                "qr_code": "https://qr.alipay.com/bax" + secrets.token_hex(10)}
    with state.lock:
        trade = state.alipay_trades.get(biz.get("out_trade_no"))
    if trade is None:
        return {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_NOT_EXIST",
                "sub_msg": "交易不存在"}
    return {"code": "10000", "msg": "Success", "trade_no": trade["trade_no"],
            "out_trade_no": biz["out_trade_no"], "buyer_logon_id": "159****5620",
            "trade_status": trade["trade_status"], "total_amount": trade["total_amount"],
            "send_pay_date": datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S")}


class Handler(BaseHTTPRequestHandler):
    server_version = "fake-gateway/1"

    def log_message(self, fmt, *args):
        sys.stderr.write("fake-gateway: " + (fmt % args) + "\n")

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n).decode("utf-8") if n else ""

    def send(self, status, text, headers=None, content_type="application/json; charset=utf-8"):
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def send_json(self, obj, status=200):
        self.send(status, json.dumps(obj, ensure_ascii=False))

    def wechat_send(self, status, obj):
        """A WeChat Pay answer, signed with the platform key over its exact body."""
        st = self.server.state
        body = json.dumps(obj, ensure_ascii=False)
        headers = st.wechat.headers(body)
        if st.take_corrupt("wechatpay"):
            headers = st.wechat.headers(body, key="wrong")
        self.send(status, body, headers)

    def do_GET(self):
        st = self.server.state
        url = urlsplit(self.path)
        if url.path == "/__test__/log":
            with st.lock:
                return self.send_json(st.log)
        if url.path == "/gateway.do":
            # Alipay takes the signed parameters in the query string too.
            return self.alipay_api(url.query)
        if re.fullmatch(r"/v3/pay/transactions/out-trade-no/([^/]+)", url.path):
            return self.wechat_api("GET", "")
        self.send(404, "not found", content_type="text/plain")

    def do_POST(self):
        st = self.server.state
        path = urlsplit(self.path).path
        body = self.body()
        if path == "/gateway.do":
            return self.alipay_api(body)
        if path == "/v3/pay/transactions/native":
            return self.wechat_api("POST", body)
        if path.startswith("/__test__/"):
            return self.control(path, json.loads(body or "{}"))
        self.send(404, "not found", content_type="text/plain")

    def alipay_api(self, body):
        st = self.server.state
        params = dict(parse_qsl(body, keep_blank_values=True))
        method = params.get("method", "")
        response_key = method.replace(".", "_") + "_response"
        if method in ALIPAY_CASHIER_METHODS:
            return self.alipay_cashier(params, method)
        try:
            biz = check_alipay_request(st, params)
            answer = alipay_answer(st, method, biz)
            st.note("alipay", method, True)
        except (Rejected, ValueError, KeyError) as e:
            st.note("alipay", method, False, str(e))
            answer = {"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-signature",
                      "sub_msg": str(e)[:200]}
        self.send(200, st.alipay.response(response_key, answer, corrupt=st.take_corrupt("alipay")),
                  content_type="text/html;charset=utf-8")

    def alipay_cashier(self, params, method):
        st = self.server.state
        try:
            biz = check_alipay_request(st, params)
            if biz.get("product_code") != ALIPAY_CASHIER_METHODS[method]:
                raise Rejected(f"product_code {biz.get('product_code')!r} for {method}")
            if not params.get("return_url") or not re.fullmatch(r"\d+\.\d{2}", biz.get("total_amount", "")):
                raise Rejected("return_url and a yuan total_amount are required")
        except (Rejected, ValueError, KeyError) as e:
            st.note("alipay", method, False, str(e))
            return self.send(200, "<h1>错误 ISV-INVALID-SIGNATURE</h1>", content_type="text/html; charset=utf-8")
        st.note("alipay", method, True)
        self.send(200, "<h1>支付宝收银台 %s</h1>" % biz["total_amount"], content_type="text/html; charset=utf-8")

    def wechat_api(self, method, body):
        st = self.server.state
        try:
            verify_wechat_authorization(st, method, self.path, body, self.headers.get("Authorization", ""))
        except Rejected as e:
            st.note("wechatpay", f"{method} {self.path}", False, str(e))
            return self.wechat_send(401, {"code": "SIGN_ERROR", "message": str(e)[:200]})
        st.note("wechatpay", f"{method} {self.path}", True)
        if method == "POST":
            order = json.loads(body)
            problems = [k for k, v in (("appid", st.wechat_cfg["appid"]), ("mchid", st.wechat_cfg["mchid"]))
                        if order.get(k) != v]
            amount = order.get("amount", {})
            if problems or not isinstance(amount.get("total"), int) or amount.get("currency") != "CNY" \
                    or not order.get("notify_url") or not order.get("description"):
                return self.wechat_send(400, {"code": "PARAM_ERROR", "message": f"bad order {problems}"})
            with st.lock:
                st.wechat_trades[order["out_trade_no"]] = {
                    "total": amount["total"], "trade_state": "NOTPAY",
                    "transaction_id": "42000" + str(secrets.randbelow(10**23)).zfill(23)}
            return self.wechat_send(200, {"code_url": "weixin://wxpay/bizpayurl?pr=" + secrets.token_urlsafe(6)})
        url = urlsplit(self.path)
        no = url.path.rsplit("/", 1)[1]
        query = dict(parse_qsl(url.query))
        with st.lock:
            trade = st.wechat_trades.get(no)
        if query.get("mchid") != st.wechat_cfg["mchid"]:
            return self.wechat_send(400, {"code": "PARAM_ERROR", "message": "mchid"})
        if trade is None:
            return self.wechat_send(404, {"code": "ORDER_NOT_EXIST", "message": "订单不存在"})
        tx = {"appid": st.wechat_cfg["appid"], "mchid": st.wechat_cfg["mchid"], "out_trade_no": no,
              "trade_type": "NATIVE", "trade_state": trade["trade_state"], "trade_state_desc": "",
              "amount": {"total": trade["total"], "payer_total": trade["total"], "currency": "CNY",
                         "payer_currency": "CNY"}}
        if trade["trade_state"] == "SUCCESS":
            tx["transaction_id"] = trade["transaction_id"]
        self.wechat_send(200, tx)

    def control(self, path, req):
        st = self.server.state
        if path == "/__test__/alipay/notify":
            return self.send_json(st.alipay.notification(req["params"], key=req.get("key", "alipay")))
        if path == "/__test__/wechatpay/notify":
            args = {k: req[k] for k in ("key", "timestamp", "signature", "serial", "event_type")
                    if req.get(k) is not None}
            return self.send_json(st.wechat.callback(req["transaction"], **args))
        if path == "/__test__/alipay/trade":
            with st.lock:
                st.alipay_trades[req["out_trade_no"]].update(
                    {k: req[k] for k in ("trade_status", "trade_no") if k in req})
                return self.send_json(st.alipay_trades[req["out_trade_no"]])
        if path == "/__test__/wechatpay/trade":
            with st.lock:
                st.wechat_trades[req["out_trade_no"]].update(
                    {k: req[k] for k in ("trade_state", "transaction_id") if k in req})
                return self.send_json(st.wechat_trades[req["out_trade_no"]])
        if path == "/__test__/corrupt":
            with st.lock:
                st.corrupt.add(req["gateway"])
            return self.send_json({"ok": True})
        self.send(404, "no such control", content_type="text/plain")


def verify_wechat_authorization(state, method, path_and_query, body, header):
    """The merchant's Authorization header, verified with wechatpayv3's
    `rsa_verify` and the merchant public key. That helper checks
    `first\\nnonce\\nbody\\n`; a request signature covers
    `METHOD\\nPATH?QUERY\\ntimestamp\\nnonce\\nbody\\n`, so the first three lines
    ride in its first argument."""
    scheme, _, rest = header.partition(" ")
    if scheme != "WECHATPAY2-SHA256-RSA2048":
        raise Rejected(f"Authorization scheme {scheme!r}")
    fields = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    missing = {"mchid", "nonce_str", "signature", "timestamp", "serial_no"} - fields.keys()
    if missing:
        raise Rejected(f"Authorization lacks {sorted(missing)}")
    if fields["mchid"] != state.wechat_cfg["mchid"]:
        raise Rejected("mchid in Authorization is not the merchant's")
    if fields["serial_no"] != state.wechat_cfg["merchant_serial"]:
        raise Rejected("serial_no is not the merchant certificate's")
    if abs(time.time() - int(fields["timestamp"])) > 300:
        raise Rejected("timestamp outside 5 minutes")
    first = "%s\n%s\n%s" % (method, path_and_query, fields["timestamp"])
    if not rsa_verify(first, fields["nonce_str"], body, fields["signature"], state.merchant_public):
        raise Rejected("signature does not verify with the merchant public key")


def main():
    key_dir = os.path.abspath(sys.argv[1])
    os.makedirs(key_dir, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.state = State(key_dir)
    port = server.server_address[1]
    base = f"http://127.0.0.1:{port}"
    print(json.dumps({
        "port": port,
        "alipay": {"gateway": base + "/gateway.do", **server.state.alipay_cfg},
        "wechatpay": {"gateway": base, **server.state.wechat_cfg},
    }), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
