-- wrk script for bench/api.py: one script, one mode per scenario.
--
--   wrk ... -s bench/wrk_api.lua <url> -- <token> <mode> [mode arguments]
--
-- Modes (paths are random where the mode says so; each wrk thread seeds its own generator):
--   fixed                          the URL's own path, unchanged (cache-warm reads, the ceiling)
--   list <max_page>                /tasks with random status, priority, sort and page
--   date <max_page> <day> [...]    /tasks?date=<one of the days>&page=<random>
--   task <min_id> <max_id>         GET /task/<random id>
--   put <min_id> <max_id>          PUT /task/<random id> with a small JSON body
--
-- Every response is counted by status and by X-Cache; done() prints one summary line of each,
-- which bench/api.py parses:  "bench-status 200=123 ..." and "bench-xcache HIT=1 MISS=2 ...".

local threads = {}

function setup(thread)
   thread:set("tid", #threads + 1)
   table.insert(threads, thread)
end

local STATUSES = { "", "active", "inactive" }
local PRIORITIES = { "", "LOW", "MEDIUM", "HIGH", "CRITICAL" }
-- Orders the task list can serve from an index (the default, -created_at, is left implicit).
local SORTS = { "", "created_at", "-id", "id" }
local PUT_PRIORITIES = { "LOW", "MEDIUM", "HIGH", "CRITICAL" }

local function pick(list)
   return list[math.random(#list)]
end

function init(args)
   math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
   for _ = 1, 10 do math.random() end -- the first draws after seeding are poorly mixed
   wrk.headers["Authorization"] = "Bearer " .. args[1]
   local mode = args[2]
   statuses = {}
   xcache = {}

   if mode == "list" then
      local max_page = tonumber(args[3])
      request = function()
         local query = "page=" .. math.random(max_page) .. "&per_page=20"
         local status, priority, sort = pick(STATUSES), pick(PRIORITIES), pick(SORTS)
         if status ~= "" then query = query .. "&status=" .. status end
         if priority ~= "" then query = query .. "&priority=" .. priority end
         if sort ~= "" then query = query .. "&sort=" .. sort end
         return wrk.format("GET", "/tasks?" .. query)
      end
   elseif mode == "date" then
      local max_page = tonumber(args[3])
      local days = {}
      for i = 4, #args do table.insert(days, args[i]) end
      request = function()
         local path = "/tasks?date=" .. pick(days) .. "&page=" .. math.random(max_page)
         return wrk.format("GET", path .. "&per_page=20")
      end
   elseif mode == "task" then
      local min_id, max_id = tonumber(args[3]), tonumber(args[4])
      request = function()
         return wrk.format("GET", "/task/" .. math.random(min_id, max_id))
      end
   elseif mode == "put" then
      local min_id, max_id = tonumber(args[3]), tonumber(args[4])
      wrk.headers["Content-Type"] = "application/json"
      request = function()
         local body = '{"priority": "' .. pick(PUT_PRIORITIES) .. '"}'
         return wrk.format("PUT", "/task/" .. math.random(min_id, max_id), nil, body)
      end
   elseif mode ~= "fixed" then
      error("unknown mode " .. tostring(mode))
   end
end

-- Header names are as the server wrote them: granian (hyper) writes them in lower case,
-- gunicorn as the app set them.
function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   local cache = headers["x-cache"] or headers["X-Cache"] or "none"
   xcache[cache] = (xcache[cache] or 0) + 1
end

local function merged(name)
   local total = {}
   for _, thread in ipairs(threads) do
      for key, count in pairs(thread:get(name)) do
         total[key] = (total[key] or 0) + count
      end
   end
   local keys = {}
   for key in pairs(total) do table.insert(keys, key) end
   table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
   local parts = {}
   for _, key in ipairs(keys) do table.insert(parts, tostring(key) .. "=" .. total[key]) end
   return table.concat(parts, " ")
end

function done(summary, latency, requests)
   io.write("bench-status ", merged("statuses"), "\n")
   io.write("bench-xcache ", merged("xcache"), "\n")
end
