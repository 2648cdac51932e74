-- wrk script: every request enqueues one task over HTTP/JSON.
-- Run: wrk -t1 -c64 -d10s -s bench/http/enqueue.lua http://127.0.0.1:7700
wrk.method = "POST"
wrk.path = "/v1/queues/bench/tasks"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"payload":{"order":12345,"side":"buy","qty":100},"priority":1}'
