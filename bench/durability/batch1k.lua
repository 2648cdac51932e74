-- wrk script: every request enqueues 100 tasks of ~1 KiB payload each (batch).
-- Used by recovery.sh to fill the write-ahead log quickly.
local tasks = {}
local pad = string.rep("x", 1000)
for i = 1, 100 do
    tasks[i] = '{"payload":{"n":' .. i .. ',"pad":"' .. pad .. '"}}'
end
wrk.method = "POST"
wrk.path = "/v1/queues/fill/tasks/batch"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"tasks":[' .. table.concat(tasks, ",") .. ']}'
