-- wrk script: counts responses by status over all threads and prints
-- "status CODE COUNT" lines when done.
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    statuses = {}
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local all = {}
    for _, t in ipairs(threads) do
        for code, n in pairs(t:get("statuses")) do
            all[code] = (all[code] or 0) + n
        end
    end
    for code, n in pairs(all) do
        io.write(string.format("status %d %d\n", code, n))
    end
    io.write(string.format("errors connect %d read %d write %d timeout %d status %d\n",
        summary.errors.connect, summary.errors.read, summary.errors.write,
        summary.errors.timeout, summary.errors.status))
end
