-- bench/wrk_invite.lua
--     wrk script of bench/delivery.sh: POSTs invitations to the mock
--     Unipile server, each to a different provider (a new invitation
--     each, as the worker sends), on kept-alive connections.  Prints one
--     summary line with the count of non-2xx answers.
--
--     BENCH_TAG  makes this run's provider ids unique
--
-- bench/wrk_invite.lua

local tag = os.getenv("BENCH_TAG") or tostring(os.time())
local threads = {}
local tid = 0
local n = 0
local bad = 0

function setup(thread)
	tid = tid + 1
	thread:set("tid", tid)
	table.insert(threads, thread)
end

function init(args)
	wrk.method = "POST"
	wrk.path = "/api/v1/users/invite"
	wrk.headers["Content-Type"] = "application/json"
	wrk.headers["Accept"] = "application/json"
end

function request()
	n = n + 1
	return wrk.format(nil, nil, nil, string.format(
		'{"provider_id":"ACoWRK_%s_%d_%d","account_id":"bench","message":"Hello there"}', tag, tid, n))
end

function response(status, headers, body)
	if status < 200 or status > 299 then
		bad = bad + 1
	end
end

function done(summary, latency, requests)
	local b = 0
	for _, t in ipairs(threads) do
		b = b + (t:get("bad") or 0)
	end
	local e = summary.errors
	io.write(string.format("wrk: %d requests in %.2f s = %.0f req/s; non-2xx %d, socket errors %d; latency p50 %.2f ms p99 %.2f ms\n",
		summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6), b,
		e.connect + e.read + e.write + e.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
