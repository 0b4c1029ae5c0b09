-- A mix of emulator requests: validation errors, generations (jobs), fetches, status page.
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local k = n % 4
  if k == 0 then
    return wrk.format("POST", "/api/v6/images/text2img", nil, '{"key":"bench","model_id":"flux"}')
  elseif k == 1 then
    return wrk.format("POST", "/api/v6/images/text2img", nil, '{"key":"bench-' .. n .. '","prompt":"a cat","width":512}')
  elseif k == 2 then
    return wrk.format("POST", "/api/v6/images/fetch/134700001", nil, '{"key":"bench"}')
  else
    return wrk.format("GET", "/api/v2/summary.json", nil, nil)
  end
end
