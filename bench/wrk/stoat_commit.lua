-- wrk script: Stoat conditional commits, one point_read and one write on
-- random keys, read_version tracked from the responses (200 and 409 both
-- carry a version to read from).
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua"
require("common")

local read_version = 0

function request()
  local body = '{"read_version":' .. read_version ..
    ',"preconditions":[{"type":"point_read","key":"' .. random_key() ..
    '"}],"operations":[{"type":"write","key":"' .. random_key() .. '","value":"dmFsdWU="}]}'
  return wrk.format("POST", "/v1/commit", { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  count_status(status)
  local version = tonumber(body:match('"version":(%d+)'))
  if version and version > read_version then read_version = version end
end
