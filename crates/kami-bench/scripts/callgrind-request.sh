#!/usr/bin/env bash
# Instructions the server spends per request, counted by callgrind: the same
# figure (within about 1%) for the same binary whatever else the machine is doing, so two
# builds can be compared on a noisy machine where timings cannot.
#
#   crates/kami-bench/scripts/callgrind-request.sh BINARY [PATH | read | poll | order | soldout | notify] [REQUESTS]
#
# Starts BINARY (`kami`) under `valgrind --tool=callgrind` on a fresh SQLite
# shop, warms it up with 200 requests, zeroes the counters, sends REQUESTS
# (default 2000) more over one keep-alive connection and prints the
# instructions counted in between, per request. PATH (default /healthz) is
# requested with GET; `order` posts orders for one code each
# (`POST /api/v1/orders`, sandbox channel) to a product stocked through the
# admin API first: one at a time, so each is its own transaction, not a
# flash sale's batch. `read` asks for that product and the product list in
# turn, as the benchmark's product reads do. `soldout` posts the same orders to a product with no
# codes (the stock gate's answer after a drop). `notify` creates that many orders first (not counted)
# and then pays each with one signed sandbox notification (openssl signs
# them). Background work (the expiry sweep, the gate's re-sync)
# falls into the same window. KEEP=FILE keeps the profile
# (callgrind_annotate FILE).
set -euo pipefail
bin=$(realpath "$1")
what=${2:-/healthz}
n=${3:-2000}
port=18190
base=http://127.0.0.1:$port
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT

export KAMI_DATA_DIR=$dir/data KAMI_BIND=127.0.0.1:$port KAMI_RATE_LIMITS=off
export KAMI_SANDBOX_SECRET=callgrind-sandbox-secret
mkdir -p "$dir/data"
valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin" serve >"$dir/serve.log" 2>&1 &
pid=$!
for _ in $(seq 600); do
    curl -sf "$base/healthz" >/dev/null && break
    sleep 0.5
done

if [ "$what" = read ] || [ "$what" = poll ] || [ "$what" = order ] || [ "$what" = soldout ] || [ "$what" = notify ]; then
    key=$("$bin" api-key create --name callgrind 2>/dev/null | tail -1)
    product=$(curl -sf -H "Authorization: Bearer $key" -H 'content-type: application/json' \
        -d '{"name":"Callgrind","price":990,"currency":"CNY"}' "$base/api/v1/admin/products" |
        sed 's/.*"id":\([0-9]*\).*/\1/')
    seq 1 $((n + 200)) | sed 's/^/CALLGRIND-/' >"$dir/codes.txt"
    [ "$what" = soldout ] || curl -sf -H "Authorization: Bearer $key" -H 'content-type: text/plain' \
        --data-binary @"$dir/codes.txt" "$base/api/v1/admin/products/$product/cards" >/dev/null
    body="{\"product_id\":$product,\"quantity\":1,\"email\":\"buyer@example.com\",\"channel\":\"sandbox\"}"
    requests() {
        printf -- '-H content-type:application/json -d %s %s/api/v1/orders ' "$body" "$base"
        for _ in $(seq $(($1 - 1))); do
            printf -- '--next -H content-type:application/json -d %s %s/api/v1/orders ' "$body" "$base"
        done
    }
    if [ "$what" = read ]; then
        requests() {
            for i in $(seq "$1"); do
                if [ $((i % 2)) = 1 ]; then printf '%s/api/v1/products/%s ' "$base" "$product"
                else printf '%s/api/v1/products ' "$base"; fi
            done
        }
    fi
    if [ "$what" = poll ]; then
        placed=$(curl -sf -H content-type:application/json -d "$body" "$base/api/v1/orders")
        no=$(printf '%s' "$placed" | grep -o '"order_no":"[^"]*"' | cut -d'"' -f4)
        token=$(printf '%s' "$placed" | grep -o '"access_token":"[^"]*"' | cut -d'"' -f4)
        requests() {
            local sep=''
            for _ in $(seq "$1"); do
                printf -- '%s--oauth2-bearer %s %s/api/v1/orders/%s ' "$sep" "$token" "$base" "$no"
                sep='--next '
            done
        }
    fi
    if [ "$what" = notify ]; then
        # shellcheck disable=SC2046
        curl -s $(requests $((n + 200))) | grep -o '"order_no":"[^"]*"' | cut -d'"' -f4 >"$dir/orders"
        [ "$(wc -l <"$dir/orders")" -eq $((n + 200)) ] || { echo "could not create the orders: $(wc -l <"$dir/orders") of $((n + 200))" >&2; exit 1; }
        requests() {
            local skip=$2 sep='' t sig body
            t=$(date +%s)
            # Every order is one code at 9.90 (990).
            tail -n +$((skip + 1)) "$dir/orders" | head -n "$1" | while read -r no; do
                body="{\"order_no\":\"$no\",\"trade_no\":\"cg-$no\",\"amount\":990,\"currency\":\"CNY\",\"status\":\"paid\"}"
                sig=$(printf '%s.%s' "$t" "$body" | openssl dgst -sha256 -hmac "$KAMI_SANDBOX_SECRET" | sed 's/.* //')
                printf -- '%s-H content-type:application/json -H kami-signature:t=%s,v1=%s -d %s %s/pay/sandbox/notify ' \
                    "$sep" "$t" "$sig" "$body" "$base"
                sep='--next '
            done
        }
    fi
else
    requests() { for _ in $(seq "$1"); do printf '%s%s ' "$base" "$what"; done; }
fi
# shellcheck disable=SC2046
curl -s $(requests 200 0) >/dev/null
args=$(requests "$n" 200)
callgrind_control -z "$pid" >/dev/null 2>&1
# shellcheck disable=SC2086
curl -s $args >"$dir/answers"
callgrind_control -d "$pid" >/dev/null 2>&1
[ -n "${KEEP:-}" ] && cp "$dir"/cg.out.1 "$KEEP"
if [ "$what" = order ] && [ "$(grep -o '"order_no"' "$dir/answers" | wc -l)" -ne "$n" ]; then
    echo "not every order was created: $(head -c 300 "$dir/answers")" >&2
    exit 1
fi
if [ "$what" = poll ] && [ "$(grep -o '"order_no"' "$dir/answers" | wc -l)" -ne "$n" ]; then
    echo "not every poll answered the order: $(head -c 300 "$dir/answers")" >&2
    exit 1
fi
if [ "$what" = soldout ] && [ "$(grep -o '"sold_out"' "$dir/answers" | wc -l)" -ne "$n" ]; then
    echo "not every order was answered sold_out: $(head -c 300 "$dir/answers")" >&2
    exit 1
fi
if [ "$what" = notify ] && [ "$(grep -o '"received":true' "$dir/answers" | wc -l)" -ne "$n" ]; then
    echo "not every notification was accepted: $(head -c 300 "$dir/answers")" >&2
    exit 1
fi
total=$(sed -n 's/^totals: //p' "$dir"/cg.out.1 | head -1)
echo "$what: $total instructions for $n requests, $((total / n)) per request ($(basename "$bin"))"
