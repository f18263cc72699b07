-- bench_webhook.lua
--     wrk script for ingest/test/bench.sh: POSTs new_relation webhooks to
--     sam_ingest, each with a different user_provider_id so that every
--     request stores a new row (a realistic INSERT + COMMIT per request,
--     not a stream of duplicates).  Prints the latency percentiles and the
--     count of non-200 answers at the end.
--
--     SAM_BENCH_SECRET  the webhook secret (required)
--     SAM_BENCH_RUN     a tag that makes this run's payloads unique
--
-- ingest/test/bench_webhook.lua

local secret = os.getenv("SAM_BENCH_SECRET") or ""
local run = os.getenv("SAM_BENCH_RUN") or tostring(os.time())
local threads = {}
local thread_no = 0

function setup(thread)
	thread_no = thread_no + 1
	thread:set("tid", thread_no)
	table.insert(threads, thread)
end

local n = 0
local non200 = 0

function init(args)
	wrk.method = "POST"
	wrk.headers["Unipile-Auth"] = secret
	wrk.headers["Content-Type"] = "application/json"
end

function request()
	n = n + 1
	local body = string.format(
		'{"event":"new_relation","account_id":"bench-account","account_type":"LINKEDIN",' ..
		'"webhook_name":"bench","user_full_name":"Bench Prospect %d",' ..
		'"user_provider_id":"ACoAA-%s-%d-%d","user_public_identifier":"bench-%d",' ..
		'"user_profile_url":"https://www.linkedin.com/in/bench-%d/"}',
		n, run, tid, n, n, n)
	return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
	if status ~= 200 then
		non200 = non200 + 1
	end
end

function done(summary, latency, requests)
	local bad = 0
	for _, t in ipairs(threads) do
		bad = bad + (t:get("non200") or 0)
	end
	io.write(string.format("requests: %d in %.1f s = %.0f req/s; non-200: %d; socket errors: %d\n",
		summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
		bad, summary.errors.connect + summary.errors.read + summary.errors.write +
		summary.errors.timeout))
	io.write(string.format("latency ms: p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n",
		latency:percentile(50) / 1000, latency:percentile(90) / 1000,
		latency:percentile(99) / 1000, latency:percentile(99.9) / 1000, latency.max / 1000))
end
