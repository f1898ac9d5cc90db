"""A fake EPay, epusdt and Stripe gateway on 127.0.0.1 for Kami's channel tests.

It answers Kami's outbound calls (EPay submit.php / mapi.php / api.php,
epusdt create-transaction, Stripe Checkout Sessions) and checks Kami's
request signatures with the gateways' own client libraries from PyPI:

* EPay:   epay-sdk    (EPayClient.sign / verify_sign)
* epusdt: epusdt      (generate_epay_signature: MD5 over the sorted fields
                       plus the token, the rule of epusdt's v1 API)
* Stripe: stripe      (WebhookSignature.generate_signature_header, checked
                       again with stripe.Webhook.construct_event)

The test drives it through /_control/*, and asks it for genuinely signed
notifications through /_notify/*, which it then sends to Kami itself (so it
can tamper with them). Prints "READY <port>" once listening.
"""

import argparse
import hashlib
import hmac
import json
import secrets
import sys
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

import stripe
from epay_sdk import EPayClient, EPayConfig
from epusdt.signature import generate_epay_signature, stringify_params

ARGS = None
LOCK = threading.Lock()
# (channel, order_no) -> what Kami asked for, plus whether the buyer paid.
ORDERS = {}
# Stripe: session id -> session; Idempotency-Key -> session id.
SESSIONS = {}
IDEMPOTENCY = {}
FAILING = set()


def epay_client(key=None):
    return EPayClient(EPayConfig(pid=ARGS.epay_pid, key=key or ARGS.epay_key,
                                 base_url="http://127.0.0.1/", environment="sandbox",
                                 verify_ssl=False))


def epusdt_body(fields, token):
    """The callback as epusdt (Go) writes it: numbers with the digits it signs."""
    signed = stringify_params(fields)
    signature = generate_epay_signature(fields, token)
    parts = []
    for k, v in fields.items():
        if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool):
            parts.append(f"{json.dumps(k)}:{signed[k]}")
        else:
            parts.append(f"{json.dumps(k)}:{json.dumps(v)}")
    parts.append(f'"signature":{json.dumps(signature)}')
    return "{" + ",".join(parts) + "}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if ARGS.verbose:
            sys.stderr.write("fake-gateway: " + fmt % args + "\n")

    # ---- plumbing -----------------------------------------------------

    def body(self):
        return self._body

    def send(self, status, payload, content_type="application/json"):
        data = payload if isinstance(payload, bytes) else (
            payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def params(self):
        query = urlsplit(self.path).query
        if self.command == "POST":
            return dict(parse_qsl(self.body().decode(), keep_blank_values=True))
        return dict(parse_qsl(query, keep_blank_values=True))

    def do_GET(self):
        self.route()

    def do_POST(self):
        self.route()

    def route(self):
        # Read the whole body first, whatever the answer: on a kept-alive
        # connection unread bytes would be taken for the next request.
        n = int(self.headers.get("content-length") or 0)
        self._body = self.rfile.read(n) if n else b""
        path = urlsplit(self.path).path
        try:
            for prefix, fn in ROUTES:
                if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
                    channel = prefix.strip("/").split("/")[0]
                    if channel in FAILING and not prefix.startswith("/_"):
                        return self.send(500, {"error": "gateway down (test)"})
                    return fn(self, path)
            self.send(404, {"error": f"no route {path}"})
        except Exception as e:  # a broken test helper must show, not hang
            self.send(500, {"error": repr(e)})

    # ---- EPay -----------------------------------------------------------

    def epay_verified(self, p):
        if p.get("pid") != ARGS.epay_pid:
            return "pid mismatch"
        if p.get("sign_type") != "MD5" or not epay_client().verify_sign(p):
            return "sign error"
        return None

    def epay_submit(self, _path):
        p = self.params()
        err = self.epay_verified(p)
        if err:
            return self.send(400, {"code": -1, "msg": err})
        trade_no = "EP" + secrets.token_hex(6)
        with LOCK:
            ORDERS[("epay", p["out_trade_no"])] = {"params": p, "trade_no": trade_no, "paid": False}
        self.send(200, {"code": 1, "verified": True, "params": p, "trade_no": trade_no})

    def epay_mapi(self, _path):
        p = self.params()
        err = self.epay_verified(p)
        if err:
            return self.send(200, {"code": -1, "msg": err})
        if not p.get("type"):
            return self.send(200, {"code": -1, "msg": "type is required in API mode"})
        trade_no = "EP" + secrets.token_hex(6)
        with LOCK:
            ORDERS[("epay", p["out_trade_no"])] = {"params": p, "trade_no": trade_no, "paid": False}
        port = self.server.server_address[1]
        self.send(200, {"code": 1, "msg": "", "trade_no": trade_no,
                        "payurl": f"http://127.0.0.1:{port}/epay/cashier/{trade_no}"})

    def epay_api(self, _path):
        p = self.params()
        if p.get("act") == "query":
            # The merchant-info call Kami's "Test" button makes.
            if p.get("pid") != ARGS.epay_pid or p.get("key") != ARGS.epay_key:
                return self.send(200, {"code": -3, "msg": "KEY校验失败"})
            return self.send(200, {"code": 1, "pid": ARGS.epay_pid, "key": ARGS.epay_key,
                                   "active": 1, "money": "0.00"})
        if p.get("act") != "order" or p.get("pid") != ARGS.epay_pid or p.get("key") != ARGS.epay_key:
            return self.send(200, {"code": -1, "msg": "KEY校验失败"})
        with LOCK:
            o = ORDERS.get(("epay", p.get("out_trade_no")))
        if not o:
            return self.send(200, {"code": -1, "msg": "订单号不存在"})
        sent = o["params"]
        self.send(200, {"code": 1, "msg": "查询订单号成功！", "trade_no": o["trade_no"],
                        "out_trade_no": sent["out_trade_no"], "type": sent.get("type", "alipay"),
                        "pid": ARGS.epay_pid, "name": sent["name"], "money": sent["money"],
                        "status": 1 if o["paid"] else 0})

    # ---- epusdt -----------------------------------------------------------

    def epusdt_create(self, _path):
        payload = json.loads(self.body(), parse_float=Decimal)
        given = payload.pop("signature", "")
        if not hmac.compare_digest(generate_epay_signature(payload, ARGS.epusdt_token), given):
            return self.send(400, {"status_code": 401, "message": "signature verification failed"})
        trade_id = "EU" + secrets.token_hex(6)
        with LOCK:
            ORDERS[("epusdt", payload["order_id"])] = {"params": payload, "trade_no": trade_id, "paid": False}
        port = self.server.server_address[1]
        self.send(200, {"status_code": 200, "message": "success", "request_id": "",
                        "data": {"trade_id": trade_id, "order_id": payload["order_id"],
                                 "amount": float(payload["amount"]), "actual_amount": 1.41,
                                 "token": "TTestWalletAddress", "expiration_time": int(time.time()) + 600,
                                 "payment_url": f"http://127.0.0.1:{port}/epusdt/pay/checkout-counter/{trade_id}"}})

    # ---- Stripe -------------------------------------------------------------

    def stripe_authorised(self):
        return self.headers.get("authorization") == f"Bearer {ARGS.stripe_secret_key}"

    def stripe_sessions(self, path):
        if not self.stripe_authorised():
            return self.send(401, {"error": {"message": "Invalid API Key provided"}})
        if self.command == "GET":
            sid = path.rsplit("/", 1)[-1]
            with LOCK:
                s = SESSIONS.get(sid)
            return self.send(200, s) if s else self.send(404, {"error": {"message": "No such checkout.session"}})
        key = self.headers.get("idempotency-key")
        form = dict(parse_qsl(self.body().decode(), keep_blank_values=True))
        if not key or key != form.get("client_reference_id"):
            return self.send(400, {"error": {"message": "Idempotency-Key must be the order number"}})
        with LOCK:
            if key in IDEMPOTENCY:
                return self.send(200, SESSIONS[IDEMPOTENCY[key]])
            sid = "cs_test_" + secrets.token_hex(12)
            port = self.server.server_address[1]
            session = {"id": sid, "object": "checkout.session", "mode": form.get("mode"),
                       "url": f"http://127.0.0.1:{port}/stripe/checkout/{sid}",
                       "client_reference_id": form["client_reference_id"],
                       "metadata": {"order_no": form.get("metadata[order_no]")},
                       "amount_total": int(form["line_items[0][price_data][unit_amount]"]),
                       "currency": form["line_items[0][price_data][currency]"],
                       "payment_status": "unpaid", "status": "open",
                       "success_url": form.get("success_url"), "cancel_url": form.get("cancel_url"),
                       "payment_intent": "pi_" + secrets.token_hex(8)}
            SESSIONS[sid] = session
            IDEMPOTENCY[key] = sid
            ORDERS[("stripe", key)] = {"params": form, "trade_no": sid, "paid": False}
        self.send(200, session)

    # ---- test controls ------------------------------------------------------

    def control(self, path):
        what = path.split("/")[2]
        req = json.loads(self.body() or b"{}")
        with LOCK:
            if what == "fail":
                (FAILING.add if req["fail"] else FAILING.discard)(req["channel"])
                return self.send(200, {"failing": sorted(FAILING)})
            if what == "paid":
                o = ORDERS[(req["channel"], req["order_no"])]
                o["paid"] = True
                if req["channel"] == "stripe":
                    SESSIONS[o["trade_no"]].update(payment_status="paid", status="complete")
                return self.send(200, {"paid": True})
            if what == "order":
                o = ORDERS.get((req["channel"], req["order_no"]))
                return self.send(200 if o else 404, o or {"error": "unknown order"})
        self.send(404, {"error": "unknown control"})

    def notify(self, path):
        """A genuinely signed notification for an order Kami created here."""
        channel = path.split("/")[2]
        # Decimals, so an amount keeps the digits the test wrote.
        req = json.loads(self.body() or b"{}", parse_float=Decimal)
        with LOCK:
            o = dict(ORDERS[(channel, req["order_no"])])
        over = req.get("override", {})
        if channel == "epay":
            sent = o["params"]
            params = {"pid": ARGS.epay_pid, "trade_no": o["trade_no"], "out_trade_no": sent["out_trade_no"],
                      "type": sent.get("type", "alipay"), "name": sent["name"], "money": sent["money"],
                      "trade_status": "TRADE_SUCCESS", **over}
            client = epay_client(req.get("key"))
            params["sign"] = client.sign(params)
            # The signature leaves sign_type out; a test may name another.
            params["sign_type"] = req.get("sign_type", "MD5")
            assert client.verify_sign(params)
            return self.send(200, {"query": urlencode(params)})
        if channel == "epusdt":
            sent = o["params"]
            fields = {"trade_id": o["trade_no"], "order_id": sent["order_id"], "amount": sent["amount"],
                      "actual_amount": Decimal("1.41"), "token": "TTestWalletAddress",
                      "block_transaction_id": "0x" + secrets.token_hex(16), "status": 2, **over}
            return self.send(200, {"body": epusdt_body(fields, req.get("token") or ARGS.epusdt_token)})
        if channel == "stripe":
            with LOCK:
                session = dict(SESSIONS[o["trade_no"]])
            # checkout.session.completed describes a finished checkout.
            session.update(payment_status="paid", status="complete")
            session.update(over.pop("session", {}))
            event = {"id": "evt_" + secrets.token_hex(12), "object": "event", "api_version": "2024-06-20",
                     "created": int(time.time()), "type": "checkout.session.completed",
                     "data": {"object": session}, **over}
            payload = json.dumps(event)
            secret = req.get("secret") or ARGS.stripe_webhook_secret
            ts = int(time.time()) + int(req.get("age_offset", 0))
            header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=ts)
            if secret == ARGS.stripe_webhook_secret and not req.get("age_offset"):
                # Stripe's own verifier must accept what we hand Kami as genuine.
                stripe.Webhook.construct_event(payload, header, secret)
            return self.send(200, {"payload": payload, "header": header})
        self.send(404, {"error": "unknown channel"})


ROUTES = [
    ("/epay/submit.php", Handler.epay_submit),
    ("/epay/mapi.php", Handler.epay_mapi),
    ("/epay/api.php", Handler.epay_api),
    ("/epusdt/api/v1/order/create-transaction", Handler.epusdt_create),
    ("/stripe/v1/checkout/sessions", Handler.stripe_sessions),
    ("/stripe/v1/checkout/sessions/", Handler.stripe_sessions),
    ("/_control/", Handler.control),
    ("/_notify/", Handler.notify),
]


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--epay-pid", required=True)
    ap.add_argument("--epay-key", required=True)
    ap.add_argument("--epusdt-token", required=True)
    ap.add_argument("--stripe-secret-key", required=True)
    ap.add_argument("--stripe-webhook-secret", required=True)
    ap.add_argument("--verbose", action="store_true")
    ARGS = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
