-- wrk script: etcd v3 transactions through the JSON gateway, the peer of
-- Stoat's conditional commit: compare the read key's mod_revision with the
-- revision read at, then put the written key. The read revision is tracked
-- from the responses' header.revision.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua"
require("common")

local revision = 1

function request()
  local body = '{"compare":[{"key":"' .. random_key() ..
    '","target":"MOD","result":"LESS","mod_revision":"' .. (revision + 1) ..
    '"}],"success":[{"request_put":{"key":"' .. random_key() .. '","value":"dmFsdWU="}}]}'
  return wrk.format("POST", "/v3/kv/txn", { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  local succeeded = body:find('"succeeded":true') ~= nil
  count_status(succeeded and "ok" or ("failed-" .. status))
  local value = tonumber(body:match('"revision":"(%d+)"'))
  if value and value > revision then revision = value end
end
