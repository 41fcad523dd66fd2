-- wrk script: the etcd peer of stoat_large.lua: 10 range compares
-- (mod_revision of every key in [begin, end) below the revision read at + 1)
-- and 20 puts of distinct random keys in one transaction.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua"
require("common")

local revision = 1

function request()
  local compares = {}
  for i = 1, 10 do
    local r = random_range_index()
    compares[i] = '{"key":"' .. range_begins[r] .. '","range_end":"' .. range_ends[r] ..
      '","target":"MOD","result":"LESS","mod_revision":"' .. (revision + 1) .. '"}'
  end
  local puts = {}
  for i, key in ipairs(distinct_keys(20)) do
    puts[i] = '{"request_put":{"key":"' .. key .. '","value":"dmFsdWU="}}'
  end
  local body = '{"compare":[' .. table.concat(compares, ",") .. '],"success":[' .. table.concat(puts, ",") .. ']}'
  return wrk.format("POST", "/v3/kv/txn", { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  local succeeded = body:find('"succeeded":true') ~= nil
  count_status(succeeded and "ok" or ("failed-" .. status))
  local value = tonumber(body:match('"revision":"(%d+)"'))
  if value and value > revision then revision = value end
end
