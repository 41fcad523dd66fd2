-- Shared by the commit workloads: base64 keys precomputed per thread, and
-- per-thread status counts reported at the end.

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

function base64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return alphabet:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

-- Random keys: a 12-byte prefix plus a 4-byte big-endian integer from
-- [0, key_space), as in FoundationDB's benchmarks.
key_space = tonumber(os.getenv("KEY_SPACE") or "1000000")
local cache_size = 65536
keys = {}
-- Ranges of about ten keys: [key(n), key(n + 10)).
range_begins = {}
range_ends = {}

local function key_of(n)
  return "stoat-bench-" .. string.char(
    math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end

function init_keys()
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  for i = 1, cache_size do
    local n = math.random(0, key_space - 1)
    keys[i] = base64(key_of(n))
    local m = math.random(0, key_space - 11)
    range_begins[i] = base64(key_of(m))
    range_ends[i] = base64(key_of(m + 10))
  end
end

-- `count` distinct cached keys (consecutive cache entries).
function distinct_keys(count)
  local start = math.random(1, cache_size - count)
  local picked = {}
  for i = 1, count do picked[i] = keys[start + i - 1] end
  return picked
end

function random_range_index()
  return math.random(1, cache_size)
end

function init(args)
  init_keys()
end

function random_key()
  return keys[math.random(1, cache_size)]
end

threads = {}
statuses = {}

function setup(thread)
  table.insert(threads, thread)
end

function count_status(status)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses")
    for status, n in pairs(counts) do totals[status] = (totals[status] or 0) + n end
  end
  local parts = {}
  for status, n in pairs(totals) do table.insert(parts, status .. "=" .. n) end
  table.sort(parts)
  io.write("statuses: " .. table.concat(parts, " ") .. "\n")
end
