-- wrk script for bench/alloc/run-http.sh: POST /api/v1/allocations, the
-- tenants (BENCH_TOKENS) in turn, each request with its own Idempotency-Key, counting 202s (accepted) apart from
-- 409s (refused: sold out once every slot is taken) and anything else.
local threads = {}

function setup(thread)
        thread:set("id", #threads)
        table.insert(threads, thread)
end

function init(args)
        n, accepted, refused, other = 0, 0, 0, 0
        tokens = {}
        for t in string.gmatch(os.getenv("BENCH_TOKENS"), "[^,]+") do
                table.insert(tokens, "Bearer " .. t)
        end
        headers = {["Content-Type"] = "application/json"}
        body = os.getenv("BENCH_BODY")
end

function request()
        n = n + 1
        headers["Idempotency-Key"] = string.format("bench-%d-%d", id, n)
        headers["Authorization"] = tokens[(n + id) % #tokens + 1]
        return wrk.format("POST", "/api/v1/allocations", headers, body)
end

function response(status, hdrs, b)
        if status == 202 then
                accepted = accepted + 1
        elseif status == 409 then
                refused = refused + 1
        else
                other = other + 1
        end
end

function done(summary, latency, requests)
        local a, r, o = 0, 0, 0
        for _, t in ipairs(threads) do
                a = a + t:get("accepted")
                r = r + t:get("refused")
                o = o + t:get("other")
        end
        local s = summary.duration / 1e6
        io.write(string.format("result accepted=%d refused=%d other=%d seconds=%.2f " ..
                "accepted_per_s=%.0f p50_ms=%.2f p99_ms=%.2f\n", a, r, o, s, a / s,
                latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
