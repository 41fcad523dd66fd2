-- PUT or GET of 64 KiB objects under 1,000 rotating keys (bench/fake_s3).
-- METHOD=PUT|GET; the path given to wrk is the bucket ("/bench").
-- Counts non-2xx answers so that a run with errors is visible.

local method = os.getenv("METHOD") or "GET"
local body = method == "PUT" and string.rep("x", 65536) or nil
local counter = 0
local errors = 0

request = function()
  counter = counter + 1
  return wrk.format(method, wrk.path .. "/obj-" .. (counter % 1000), nil, body)
end

response = function(status)
  if status >= 300 then errors = errors + 1 end
end

done = function()
  io.write(string.format("non-2xx %d\n", errors))
end
