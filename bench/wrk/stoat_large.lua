-- wrk script: larger Stoat transactions: 10 range reads (about ten keys
-- each) and 20 writes of distinct random keys, read_version tracked from the
-- responses.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua"
require("common")

local read_version = 0

function request()
  local reads = {}
  for i = 1, 10 do
    local r = random_range_index()
    reads[i] = '{"type":"range_read","begin":"' .. range_begins[r] .. '","end":"' .. range_ends[r] .. '"}'
  end
  local writes = {}
  for i, key in ipairs(distinct_keys(20)) do
    writes[i] = '{"type":"write","key":"' .. key .. '","value":"dmFsdWU="}'
  end
  local body = '{"read_version":' .. read_version .. ',"preconditions":[' .. table.concat(reads, ",") ..
    '],"operations":[' .. table.concat(writes, ",") .. ']}'
  return wrk.format("POST", "/v1/commit", { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  count_status(status)
  local version = tonumber(body:match('"version":(%d+)'))
  if version and version > read_version then read_version = version end
end
